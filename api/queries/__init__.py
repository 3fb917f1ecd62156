"""Read queries behind the API: SQL over the tables of `schema/migrations`, rows -> models.

Every query takes the tenant scope explicitly (`tenant=None` means all tenants, which only
admin principals get), binds values as server-side parameters, and runs synchronously: call
from a threadpool (sync FastAPI endpoints), never on the event loop.
"""
