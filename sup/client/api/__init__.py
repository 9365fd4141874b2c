"""The REST API's endpoints, one module per area of docs/api.md; `SupHttp` (http.py) puts them together."""
