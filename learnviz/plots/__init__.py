"""The figures of a run, one module per figure, each a function from plain inputs (arrays, lists
of names, the hard-example board's JSON) to a matplotlib `Figure` drawn with the Agg canvas.

The figure modules read no archive and write no file (except `common.save_png` and
`gif.write_gif`); `sources` reads what they need from the archives, and `learnviz.visualize`
decides what is stale and draws it.

  loss_curve        loss, probe accuracy and learning rate over training
  skill_radar       accuracy per skill, one checkpoint against the base (first) checkpoint
  umap_scatter      the probes' aligned UMAP layout per layer, coloured by skill, fixed axes
  layer_drift       relative weight change per layer between consecutive checkpoints (heatmap)
  calibration       reliability diagram of one checkpoint and ECE over training
  hard_board        the hard examples, right or wrong (and how) at every checkpoint
  logprob_heatmap   per-token log-probability of a canonical answer, and per category
  error_positions   where wrong answers depart from the expected one, over training
  entropy_positions mean next-token entropy per answer position, over training
  geometry          RSA drift and linear CKA of each layer over training
  health            the checkpoint health flags: robust z-score per signal and checkpoint
  data_impact       training source x skill impact estimate, with the mix per interval
  gif               frames (PNG files) -> an animated GIF
  sources           the archived series -> each figure function's arguments
  common            the Agg figure, the deterministic PNG writer, shortening, the skill palette
"""
