"""The access log names the route, never the ids in its path (a user id, a ticket, a channel user)."""
from __future__ import annotations

import logging

from _accounts_fixtures import ADMIN, make_client


def test_access_log_names_the_route_not_the_ids(tmp_path, caplog):
    with make_client(tmp_path) as c, caplog.at_level(logging.INFO, logger="hc.access"):
        c.get("/api/v1/admin/accounts/u-secret-7f3a", headers={"Authorization": f"Bearer {ADMIN}"})
        c.delete("/api/v1/admin/channel-links/wechat/oSecretOpenid", headers={"Authorization": f"Bearer {ADMIN}"})
    paths = [r.fields["path"] for r in caplog.records if r.name == "hc.access" and hasattr(r, "fields")]
    assert "/api/v1/admin/accounts/{user_id}" in paths, paths
    assert "/api/v1/admin/channel-links/{channel}/{external_id}" in paths, paths
    assert not any("secret" in p.lower() for p in paths), paths
