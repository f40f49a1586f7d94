"""The console's pages, one module a concern; each offers `routes(console) -> APIRouter`."""
