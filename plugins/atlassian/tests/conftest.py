"""Every test here runs on SQLite and on PostgreSQL: the kit's gateway fixture
(``authgateway_gateway``) is handed each backend in turn."""

from authgateway.testing.pytest_plugin import each_backend

authgateway_database_url = each_backend("atlassian")
