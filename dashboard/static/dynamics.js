// The interactive learning-dynamics panels, drawn with plotly.js (served by this app, never a
// CDN) from the JSON API under /api/runs/<run>/ (docs/api.md). Every probe text (skill and
// category names too) arrives HTML-escaped from the server and goes only into plotly labels, which
// render it as text; a run's label (its folder's name) arrives raw: it goes into the DOM as text
// (textContent), and into plotly labels only through html().
// Live: polls the run's version.json and redraws with the new data; the page never reloads.
(function () {
  "use strict";
  var root = document.getElementById("dynamics");
  if (!root || !window.Plotly) {
    return;
  }
  var Plotly = window.Plotly;
  var API = root.dataset.api;                       // "/api/runs/"
  var params = new URLSearchParams(window.location.search);
  var run = root.dataset.run;
  var fixedStep = root.dataset.step ? parseInt(root.dataset.step, 10) : null;   // the checkpoint page
  var seconds = parseInt(params.get("poll") || root.dataset.refreshSeconds || "30", 10);
  var CONFIG = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage", "sendDataToCloud"]};
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];
  // maps keyed by names from the data (skills, run folders) have no prototype: a skill named
  // "constructor" or a run named "__proto__" would find Object.prototype's members in a plain {}
  var state = {version: null, overview: null, metrics: null, umap: null, frames: Object.create(null), umapIndex: 0,
               layer: null, playing: null, overlay: Object.create(null), runs: []};

  function $(id) { return document.getElementById(id); }
  function html(text) {                             // a raw text for a plotly label (rendered as HTML)
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
  }
  function url(path, forRun) { return API + encodeURIComponent(forRun || run) + path; }
  function get(path, forRun) {
    return fetch(url(path, forRun), {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }
  function say(text) { var n = $("live-note"); if (n) { n.textContent = text; } }
  function mark(el, hasData, note) {
    el.dataset.drawn = hasData ? "data" : "empty";
    var p = el.parentNode.querySelector(".panel-note");
    if (p) { p.textContent = hasData ? "" : (note || "No data yet."); }
  }
  function layout(extra) {
    var base = {margin: {l: 55, r: 20, t: 10, b: 40}, height: 330, paper_bgcolor: "#ffffff",
                plot_bgcolor: "#ffffff", font: {size: 12}, legend: {orientation: "h", y: -0.22},
                hoverlabel: {align: "left"}};
    return Object.assign(base, extra || {});
  }
  var EMPTY = {xaxis: {visible: false}, yaxis: {visible: false}, height: 120};
  function draw(id, traces, lay) {
    var el = $(id);
    if (!el) { return null; }
    if (!traces.length) { lay = EMPTY; }
    return Plotly.react(el, traces, layout(lay), CONFIG).then(function () { return el; });
  }
  // A checkpoint axis of heatmap columns or rows (one category per step: columns stay equal when
  // checkpoints are unevenly spaced). Plotly labels every category it can fit, rotated: at a few
  // hundred checkpoints that is a comb of upright numbers clipped at the margin, over the axis
  // title. A few labels at one stride, with room made for them, read at any length of run.
  var STEP_TICKS = 8;
  function stepAxis(title, extra) {
    return Object.assign({type: "category", automargin: true, nticks: STEP_TICKS, title: {text: title}}, extra || {});
  }
  function cellGap(count) { return count > 60 ? 0 : 1; }   // a 1-px gap between 1-px cells would hide them
  function mode(steps) { return steps.length > 60 ? "lines" : "lines+markers"; }   // markers: only while few
  function nearestIndex(steps, step) {
    var best = 0;
    for (var i = 0; i < steps.length; i++) {
      if (Math.abs(steps[i] - step) < Math.abs(steps[best] - step)) { best = i; }
    }
    return best;
  }
  function setupSlider(id, steps, index, onChange) {
    var s = $(id);
    if (!s) { return; }
    s.min = 0;
    s.max = Math.max(steps.length - 1, 0);
    s.value = index;
    s.disabled = steps.length < 2 || fixedStep !== null;
    if (!s.dataset.bound) {
      s.dataset.bound = "1";
      s.addEventListener("input", function () { onChange(parseInt(s.value, 10)); });
    }
  }

  // ------------------------------------------------------------ loss & metrics (+ overlay runs)
  function drawMetrics() {
    var el = $("panel-metrics");
    var m = state.metrics;
    if (!el || !m) { return Promise.resolve(); }
    var t = [];
    if (m.train_loss) { t.push({x: m.steps, y: m.train_loss, name: "train loss", mode: mode(m.steps), line: {color: "#333"}}); }
    if (m.eval_loss) { t.push({x: m.steps, y: m.eval_loss, name: "eval loss", mode: mode(m.steps), line: {color: "#888", dash: "dot"}}); }
    if (m.learning_rate) { t.push({x: m.steps, y: m.learning_rate, name: "learning rate", yaxis: "y2", mode: "lines", line: {color: "#bbb"}}); }
    t.push({x: m.steps, y: m.accuracy, name: "accuracy", xaxis: "x2", yaxis: "y3", mode: mode(m.steps), line: {color: "#000", width: 3}});
    Object.keys(m.skills).forEach(function (s, i) {
      t.push({x: m.steps, y: m.skills[s], name: s, xaxis: "x2", yaxis: "y3", mode: "lines", line: {color: COLORS[i % COLORS.length]}});
    });
    Object.keys(state.overlay).forEach(function (id, i) {
      var o = state.overlay[id];
      var dash = ["dash", "dot", "dashdot", "longdash"][i % 4];
      if (o.metrics.train_loss) {
        t.push({x: o.metrics.steps, y: o.metrics.train_loss, name: html(o.label) + ": train loss", mode: "lines", line: {color: "#333", dash: dash}});
      }
      t.push({x: o.metrics.steps, y: o.metrics.accuracy, name: html(o.label) + ": accuracy", xaxis: "x2", yaxis: "y3", mode: "lines", line: {color: "#000", dash: dash}});
    });
    var has = m.steps.length > 0;
    return draw("panel-metrics", t, {
      height: 420, showlegend: true,
      xaxis: {anchor: "y", showticklabels: false}, yaxis: {domain: [0.56, 1], title: {text: "loss"}},
      yaxis2: {overlaying: "y", side: "right", showgrid: false, tickformat: ".1e", automargin: true, title: {text: "lr"}},
      xaxis2: {anchor: "y3", matches: "x", title: {text: "step"}},
      yaxis3: {domain: [0, 0.46], range: [-0.03, 1.03], title: {text: "accuracy"}}
    }).then(function () { mark(el, has); });
  }

  // ------------------------------------------------------------ skill radar
  function drawRadar(index) {
    var el = $("panel-radar");
    var m = state.metrics;
    if (!el || !m) { return Promise.resolve(); }
    var skills = Object.keys(m.skills);
    if (!m.steps.length || !skills.length) {
      return draw("panel-radar", [], {}).then(function () { mark(el, false); });
    }
    if (index === undefined || index === null) {
      index = fixedStep !== null ? nearestIndex(m.steps, fixedStep) : m.steps.length - 1;
    }
    state.radarIndex = index;
    var label = $("radar-step");
    if (label) { label.textContent = "step " + m.steps[index]; }
    var theta = skills.concat([skills[0]]);
    function at(i) { return theta.map(function (s) { return m.skills[s][i]; }); }
    var t = [
      {type: "scatterpolar", r: at(0), theta: theta, name: "base (step " + m.steps[0] + ")", line: {dash: "dash", color: "#888"}},
      {type: "scatterpolar", r: at(index), theta: theta, name: "step " + m.steps[index], fill: "toself", line: {color: "#1f5fa8"}}
    ];
    var last = m.steps.length - 1;
    if (index !== last && fixedStep === null) {
      t.push({type: "scatterpolar", r: at(last), theta: theta, name: "latest (step " + m.steps[last] + ")", line: {color: "#2ca02c", dash: "dot"}});
    }
    setupSlider("radar-slider", m.steps, index, drawRadar);
    return draw("panel-radar", t, {polar: {radialaxis: {range: [0, 1]}}, margin: {l: 40, r: 40, t: 30, b: 40}})
      .then(function () { mark(el, true); });
  }

  // ------------------------------------------------------------ weight drift
  function drawDrift(d) {
    var el = $("panel-drift");
    if (!el) { return Promise.resolve(); }
    var has = d.layers.length > 0 && d.steps.length > 0;
    return draw("panel-drift", [{type: "heatmap", x: d.steps.map(String), y: d.layers, z: d.z, colorscale: "Viridis",
      hovertemplate: "layer %{y}<br>step %{x}<br>relative change %{z}<extra></extra>", colorbar: {thickness: 10}}],
      {xaxis: stepAxis("step"), yaxis: {automargin: true}, margin: {l: 90, r: 10, t: 10, b: 40}})
      .then(function () { mark(el, has, "No weight analysis yet."); });
  }

  // ------------------------------------------------------------ UMAP
  function frameKey(step, layer) { return layer + ":" + step; }
  function frame(step, layer) {
    var k = frameKey(step, layer);
    if (!state.frames[k]) {
      state.frames[k] = get("/umap/" + step + ".json?layer=" + layer).catch(function (e) {
        delete state.frames[k];
        throw e;
      });
    }
    return state.frames[k];
  }
  function umapTraces(f) {
    var u = state.umap;
    var p = u.probes;
    var groups = Object.create(null);
    var order = [];
    for (var i = 0; i < p.id.length; i++) {
      var s = p.skill[i];
      if (!groups[s]) { groups[s] = []; order.push(s); }
      groups[s].push(i);
    }
    return order.map(function (s, gi) {
      var idx = groups[s];
      return {
        type: "scatter", mode: "markers", name: s,
        x: idx.map(function (i) { return f.x[i]; }), y: idx.map(function (i) { return f.y[i]; }),
        text: idx.map(function (i) {
          return "<b>" + p.id[i] + "</b> (" + s + ")<br>" + p.prompt[i] + "<br>expected: " + p.expected[i] +
            "<br>greedy: " + (f.answer[i] === null ? p.expected[i] : f.answer[i]) + "<br>" + (f.correct[i] ? "right" : "wrong");
        }),
        customdata: idx,
        hovertemplate: "%{text}<extra></extra>",
        marker: {size: 8, color: COLORS[gi % COLORS.length],
                 symbol: idx.map(function (i) { return f.correct[i] ? "circle" : "circle-open"; }),
                 line: {width: 1.5, color: COLORS[gi % COLORS.length]}}
      };
    });
  }
  function showUmap(index) {
    var el = $("panel-umap");
    var u = state.umap;
    if (!el || !u || !u.steps.length) { return Promise.resolve(); }
    index = Math.max(0, Math.min(index, u.steps.length - 1));
    state.umapIndex = index;
    var step = u.steps[index];
    var layer = state.layer;
    var s = $("umap-slider");
    if (s) { s.value = index; }
    var label = $("umap-step");
    if (label) { label.textContent = "step " + step + " (" + (index + 1) + " of " + u.steps.length + ")"; }
    var started = performance.now();
    return frame(step, layer).then(function (f) {
      if (state.umapIndex !== index || state.layer !== layer) { return null; }   // a later move won
      var r = u.ranges[String(layer)];
      return Plotly.react(el, umapTraces(f), layout({
        height: 420, xaxis: {range: r.x, zeroline: false, showticklabels: false},
        yaxis: {range: r.y, zeroline: false, showticklabels: false},
        hovermode: "closest", uirevision: "umap", margin: {l: 20, r: 20, t: 10, b: 40}
      }), CONFIG).then(function () {
        el.dataset.step = String(step);
        el.dataset.layer = String(layer);
        el.dataset.redrawMs = String(Math.round(performance.now() - started));
        mark(el, true);
        if (index + 1 < u.steps.length) { frame(u.steps[index + 1], layer).catch(function () {}); }   // prefetch
      });
    });
  }
  function stopPlay() {
    if (state.playing) { window.clearTimeout(state.playing); state.playing = null; }
    var b = $("umap-play");
    if (b) { b.textContent = "▶ Play"; }
  }
  function play() {
    var u = state.umap;
    if (state.playing) { stopPlay(); return; }
    if (!u || u.steps.length < 2) { return; }
    var b = $("umap-play");
    if (b) { b.textContent = "❚❚ Pause"; }
    var start = state.umapIndex >= u.steps.length - 1 ? 0 : state.umapIndex;
    function tick(i) {
      showUmap(i).then(function () {
        if (!state.playing) { return; }
        if (i + 1 >= u.steps.length) { stopPlay(); return; }
        state.playing = window.setTimeout(function () { tick(i + 1); }, 350);
      });
    }
    state.playing = window.setTimeout(function () { tick(start); }, 0);
  }
  function setupUmap(u) {
    var el = $("panel-umap");
    if (!el) { return Promise.resolve(); }
    var follow = !state.umap || state.umapIndex >= state.umap.steps.length - 1;
    state.umap = u;
    if (!u.steps.length) {
      return draw("panel-umap", [], {}).then(function () { mark(el, false, "No UMAP layouts yet (the geometry stage)."); });
    }
    var sel = $("umap-layer");
    if (state.layer === null || u.layers.indexOf(state.layer) < 0) { state.layer = u.layers[u.layers.length - 1]; }
    if (sel) {
      sel.textContent = "";
      u.layers.forEach(function (k) {
        var o = document.createElement("option");
        o.value = String(k);
        o.textContent = "decoder block " + k;
        o.selected = k === state.layer;
        sel.appendChild(o);
      });
      if (!sel.dataset.bound) {
        sel.dataset.bound = "1";
        sel.addEventListener("change", function () { state.layer = parseInt(sel.value, 10); showUmap(state.umapIndex); });
      }
    }
    var b = $("umap-play");
    if (b && !b.dataset.bound) {
      b.dataset.bound = "1";
      b.addEventListener("click", play);
    }
    if (b) { b.disabled = u.steps.length < 2 || fixedStep !== null; }
    var index = fixedStep !== null ? nearestIndex(u.steps, fixedStep) : (follow ? u.steps.length - 1 : state.umapIndex);
    setupSlider("umap-slider", u.steps, index, function (i) { stopPlay(); showUmap(i); });
    return showUmap(index);
  }

  // ------------------------------------------------------------ hard-example board
  function drawBoard(b) {
    var el = $("panel-board");
    if (!el) { return Promise.resolve(); }
    if (!b.available || !b.examples.length) {
      return draw("panel-board", [], {}).then(function () {
        mark(el, false, b.error ? "The board cannot be read: " + b.error : "No hard examples yet.");
      });
    }
    var text = b.examples.map(function (ex, r) {
      return b.steps.map(function (s, c) {
        var a = b.answer[r][c];
        var v = b.z[r][c];
        return "<b>" + ex.id + "</b> at step " + s + "<br>" + ex.prompt + "<br>expected: " + ex.expected +
          "<br>answer: " + (a === null ? "–" : b.answers[a]) + "<br>" + (v === null ? "not evaluated" : (v ? "right" : "wrong"));
      });
    });
    return draw("panel-board", [{type: "heatmap", x: b.steps.map(String), y: b.examples.map(function (e) { return e.id; }),
      z: b.z, text: text, hovertemplate: "%{text}<extra></extra>", zmin: 0, zmax: 1, xgap: cellGap(b.steps.length), ygap: 1,
      colorscale: [[0, "#d62728"], [1, "#2ca02c"]], showscale: false}],
      {xaxis: stepAxis("step"), yaxis: {automargin: true, autorange: "reversed"},
       height: Math.max(220, 40 + 22 * b.examples.length), margin: {l: 110, r: 10, t: 10, b: 40}})
      .then(function () { mark(el, true); });
  }

  // ------------------------------------------------------------ calibration
  function drawCalibration(index) {
    var el = $("panel-calibration");
    var m = state.metrics;
    if (!el || !m) { return Promise.resolve(); }
    if (!m.steps.length) { return draw("panel-calibration", [], {}).then(function () { mark(el, false); }); }
    if (index === undefined || index === null) {
      index = fixedStep !== null ? nearestIndex(m.steps, fixedStep) : m.steps.length - 1;
    }
    state.calIndex = index;
    setupSlider("cal-slider", m.steps, index, drawCalibration);
    var step = m.steps[index];
    return get("/calibration/" + step + ".json").then(function (c) {
      if (state.calIndex !== index) { return null; }
      var label = $("cal-step");
      if (label) { label.textContent = "step " + step + ": ECE " + c.ece + (c.direction ? " (" + c.direction + ")" : ""); }
      var t = [
        {x: [0, 1], y: [0, 1], mode: "lines", name: "perfect", line: {dash: "dash", color: "#aaa"}, hoverinfo: "skip"},
        {x: c.confidence, y: c.accuracy, mode: "lines+markers", name: "step " + step, customdata: c.count,
         marker: {size: c.count.map(function (n) { return 5 + Math.min(15, Math.sqrt(n)); })},
         hovertemplate: "confidence %{x}<br>accuracy %{y}<br>%{customdata} probes<extra></extra>"}
      ];
      if (m.ece && fixedStep === null) {
        t.push({x: m.steps, y: m.ece, name: "ECE over steps", xaxis: "x2", yaxis: "y2", mode: mode(m.steps), line: {color: "#d62728"}});
        t.push({x: [step], y: [m.ece[index]], name: "chosen step", xaxis: "x2", yaxis: "y2", mode: "markers",
                marker: {size: 12, color: "#d62728", symbol: "circle-open"}, showlegend: false});
      }
      var two = t.length > 2;
      return draw("panel-calibration", t, {
        xaxis: {domain: two ? [0, 0.45] : [0, 1], range: [0, 1], title: {text: "confidence"}},
        yaxis: {range: [0, 1.02], title: {text: "accuracy"}},
        xaxis2: {domain: [0.57, 1], anchor: "y2", title: {text: "step"}}, yaxis2: {anchor: "x2", title: {text: "ECE"}}
      }).then(function () { mark(el, c.count.length > 0); });
    }).catch(function (e) { mark(el, false, String(e.message || e)); });
  }

  // ------------------------------------------------------------ logprob, entropy, geometry
  function drawLogprob(d) {
    var el = $("panel-logprob");
    if (!el) { return Promise.resolve(); }
    var c = d.canonical;
    if (!c) { return draw("panel-logprob", [], {}).then(function () { mark(el, false); }); }
    var note = $("logprob-note");
    if (note) { note.textContent = "probe " + c.probe_id.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, "\"").replace(/&#x27;/g, "'").replace(/&amp;/g, "&"); }
    var x = c.tokens.map(function (tok, i) { return i + ": " + tok; });
    var t = [{type: "heatmap", x: x, y: c.steps.map(String), z: c.z, colorscale: "Viridis", zmax: 0,
      hovertemplate: "step %{y}<br>token %{x}<br>log p %{z}<extra></extra>", colorbar: {thickness: 10}}];
    var lay = {xaxis: {type: "category", automargin: true, title: {text: "expected token"}},
               yaxis: stepAxis("step"), height: 380};
    if (d.categories && d.categories.names.length) {
      t[0].xaxis = "x"; t[0].yaxis = "y";
      t.push({type: "heatmap", x: d.categories.steps.map(String), y: d.categories.names, z: d.categories.z,
        xaxis: "x2", yaxis: "y2", colorscale: "Viridis", showscale: false,
        hovertemplate: "%{y}<br>step %{x}<br>mean log p %{z}<extra></extra>"});
      lay.xaxis.domain = [0, 0.36];
      t[0].colorbar = {thickness: 10, x: 0.38};
      lay.xaxis2 = stepAxis("step (per category)", {domain: [0.6, 1], anchor: "y2"});
      lay.yaxis2 = {anchor: "x2", automargin: true};
    }
    return draw("panel-logprob", t, lay).then(function () { mark(el, c.steps.length > 0); });
  }
  function drawEntropy(d) {
    var el = $("panel-entropy");
    if (!el) { return Promise.resolve(); }
    var has = d.steps.length > 0 && d.positions.length > 0;
    return draw("panel-entropy", [{type: "heatmap", x: d.positions.map(String), y: d.steps.map(String), z: d.z,
      colorscale: "Magma", hovertemplate: "step %{y}<br>position %{x}<br>entropy %{z} nats<extra></extra>", colorbar: {thickness: 10}}],
      {xaxis: {type: "category", title: {text: "answer position"}}, yaxis: stepAxis("step")})
      .then(function () { mark(el, has, "No checkpoint analysed yet."); });
  }
  function drawGeometry(d) {
    var el = $("panel-geometry");
    if (!el) { return Promise.resolve(); }
    var t = [];
    Object.keys(d.layers).forEach(function (k, i) {
      var g = d.layers[k];
      var col = COLORS[i % COLORS.length];
      t.push({x: d.steps, y: g.drift_prev, name: "block " + k + " drift vs previous", mode: mode(d.steps), line: {color: col}});
      t.push({x: d.steps, y: g.drift_first, name: "block " + k + " drift vs first", mode: "lines", line: {color: col, dash: "dot"}});
      t.push({x: d.steps, y: g.cka_prev, name: "block " + k + " CKA vs previous", xaxis: "x2", yaxis: "y2", mode: mode(d.steps), line: {color: col}});
      t.push({x: d.steps, y: g.cka_first, name: "block " + k + " CKA vs first", xaxis: "x2", yaxis: "y2", mode: "lines", line: {color: col, dash: "dot"}});
    });
    var has = t.some(function (tr) { return tr.y.some(function (v) { return v !== null; }); });
    return draw("panel-geometry", t, {height: 420, xaxis: {domain: [0, 0.44], title: {text: "step"}}, yaxis: {title: {text: "RSA drift"}},
      xaxis2: {domain: [0.58, 1], anchor: "y2", title: {text: "step"}}, yaxis2: {anchor: "x2", range: [0, 1.02], title: {text: "linear CKA"}}})
      .then(function () { mark(el, has, "No geometry yet (needs two checkpoints)."); });
  }

  // ------------------------------------------------------------ runs: picker and overlay
  function setupRuns() {
    var picker = $("run-picker");
    var box = $("run-overlay");
    if (!picker && !box) { return Promise.resolve(); }
    return fetch(API.replace(/\/runs\/$/, "/runs.json"), {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (d) {
      state.runs = d.runs;
      var mine = d.runs.filter(function (r) { return r.id === run; })[0];
      if (picker) {
        picker.textContent = "";
        d.runs.forEach(function (r) {
          var o = document.createElement("option");
          o.value = r.id;
          o.textContent = r.label + " (" + r.steps + " steps)";
          o.selected = r.id === run;
          picker.appendChild(o);
        });
        picker.disabled = d.runs.length < 2;
        if (!picker.dataset.bound) {
          picker.dataset.bound = "1";
          picker.addEventListener("change", function () {
            var q = new URLSearchParams(window.location.search);
            q.set("run", picker.value);
            window.location.search = q.toString();
          });
        }
      }
      if (box) {
        box.textContent = "";
        var others = d.runs.filter(function (r) { return r.id !== run && mine && r.probe_hash && r.probe_hash === mine.probe_hash; });
        if (!others.length) { box.textContent = "no other run of this probe set"; }
        others.forEach(function (r) {
          var lab = document.createElement("label");
          var cb = document.createElement("input");
          cb.type = "checkbox";
          cb.value = r.id;
          cb.checked = !!state.overlay[r.id];
          cb.addEventListener("change", function () {
            if (!cb.checked) { delete state.overlay[r.id]; drawMetrics(); return; }
            get("/metrics.json", r.id).then(function (m) {
              state.overlay[r.id] = {label: r.label, metrics: m};
              drawMetrics();
            });
          });
          lab.appendChild(cb);
          lab.appendChild(document.createTextNode(" " + r.label));
          box.appendChild(lab);
        });
      }
    });
  }

  // ------------------------------------------------------------ load, and live updates
  function want(id) { return !!$(id); }
  function loadAll() {
    var jobs = [];
    var metricsJob = (want("panel-metrics") || want("panel-radar") || want("panel-calibration"))
      ? get("/metrics.json").then(function (m) { state.metrics = m; return Promise.all([drawMetrics(), drawRadar(fixedStep === null && state.radarIndex !== undefined && state.radarIndex < m.steps.length - 1 ? state.radarIndex : null), drawCalibration(fixedStep === null && state.calIndex !== undefined && state.calIndex < m.steps.length - 1 ? state.calIndex : null)]); })
      : Promise.resolve();
    jobs.push(metricsJob);
    if (want("panel-drift")) { jobs.push(get("/drift.json").then(drawDrift)); }
    if (want("panel-umap")) { jobs.push(get("/umap.json").then(setupUmap)); }
    if (want("panel-board")) { jobs.push(get("/board.json").then(drawBoard)); }
    if (want("panel-logprob")) { jobs.push(get("/logprob.json").then(drawLogprob)); }
    if (want("panel-entropy")) { jobs.push(get("/entropy.json").then(drawEntropy)); }
    if (want("panel-geometry")) { jobs.push(get("/geometry.json").then(drawGeometry)); }
    return Promise.all(jobs);
  }
  function poll() {
    get("/version.json").then(function (v) {
      if (v.version !== state.version) {
        state.version = v.version;
        say("New results: updating…");
        return loadAll().then(function () {
          root.dataset.version = v.version;
          root.dataset.updates = String(parseInt(root.dataset.updates || "0", 10) + 1);
          say("Live: updated " + new Date().toLocaleTimeString() + "; checks every " + seconds + " s.");
        });
      }
      say("Live: checked " + new Date().toLocaleTimeString() + "; checks for new checkpoints every " + seconds + " s.");
      return null;
    }).catch(function (e) {
      say("The dashboard server does not answer (" + (e.message || e) + "); trying again every " + seconds + " s.");
    });
  }
  var t0 = performance.now();
  state.version = root.dataset.version;
  Promise.all([loadAll(), setupRuns()]).then(function () {
    root.dataset.ready = "1";
    root.dataset.readyMs = String(Math.round(performance.now() - t0));
    root.dataset.readyAt = String(Math.round(performance.now()));     // ms since the navigation started
    say("Live: checks for new checkpoints every " + seconds + " s.");
  }).catch(function (e) {
    root.dataset.ready = "error";
    say("Could not draw every panel: " + (e.message || e));
    if (window.console) { console.error(e); }
  });
  if (seconds > 0 && fixedStep === null) { window.setInterval(poll, seconds * 1000); }
})();
