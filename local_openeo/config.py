"""openeo-driver's backend config (loaded through ``OPENEO_BACKEND_CONFIG``): basic
auth with the configured logins, no OIDC, and signed asset URLs so result downloads
need no token (what MultiBackendJobManager and aggregators expect)."""

import hmac

from openeo_driver.config import OpenEoBackendConfig
from openeo_driver.urlsigning import UrlSigner

from local_openeo.settings import BackendSettings

_settings = BackendSettings.from_env()
_logins = _settings.logins()


def _password_ok(user: str, password: str) -> bool:
    # Constant time: how long a refusal takes says nothing about the password.
    expected = _logins.get(user, "")
    return hmac.compare_digest(expected.encode(), password.encode()) and user in _logins


config = OpenEoBackendConfig(
    id=f"local-openeo-{_settings.name}",
    capabilities_title=f"tilekeeper local openEO back-end ({_settings.name})",
    capabilities_description="A local openEO back-end: openeo-driver's API, jobs run with "
    "openeo-processes-dask on data from the tilekeeper catalogue.",
    processing_facility="tilekeeper local",
    processing_software="local_openeo",
    enable_basic_auth=True,
    valid_basic_auth=lambda user, password: _password_ok(user, password),
    enable_oidc_auth=False,
    url_signer=UrlSigner(secret=_settings.signing_secret, expiration=24 * 3600),
)
