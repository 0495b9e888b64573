"""The dashboard's logic, importable without the page: `service` (weights, fallback, predictions,
explanations), `uploads` (file -> image, the only place a requested file is opened) and `views`
(what the Mistakes, Trust and Model tabs show). app.py lays them out."""
