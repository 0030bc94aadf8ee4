"""`emogen serve`: the web studio and HTTP API on one resident model (the top layer, above outputs).

fastapi, uvicorn and python-multipart come with the `serve` extra and are imported only by app.py and
server.py (nothing here imports them, so `emogen --help` stays light)."""
