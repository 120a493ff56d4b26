"""The typed client, under the name it had inside the server package: ``authgateway.client``
re-exports ``authgateway_client`` (the ``authgateway-client`` distribution in the repository's
``client/`` folder) so that code importing it from here keeps working. New code imports
``authgateway_client``; it needs httpx only, not this package.

The server does not depend on the client, so this module imports only where
``authgateway-client`` is installed too (``pip install ./client``)."""

from __future__ import annotations

try:
    from authgateway_client import *  # noqa: F403  (the whole public API, by its __all__)
    from authgateway_client import __all__  # noqa: F401
except ModuleNotFoundError as exc:
    if exc.name != "authgateway_client":
        raise
    raise ImportError(
        "authgateway.client is the authgateway-client distribution, which is not installed: "
        "install it from the repository's client/ folder (`pip install ./client`, or "
        "`pip install 'authgateway-client @ git+<repository-url>#subdirectory=client'`) and "
        "import authgateway_client.", name=exc.name) from None
