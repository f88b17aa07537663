"""The Content-Security-Policy headers of the dashboard's responses."""

# Everything from this server, nothing from elsewhere (users run it offline), and no inline
# script or style, so that a probe text could not run even if it escaped escaping.
CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The pages drawn with plotly.js (dashboard/static/dynamics.js): plotly sets inline styles and draws
# heatmaps as data: images; scripts still come from this server only, never inline.
PLOT_CSP = CSP.replace("img-src 'self'", "img-src 'self' data:").replace("style-src 'self'",
                                                                        "style-src 'self' 'unsafe-inline'")
