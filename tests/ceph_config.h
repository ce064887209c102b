// The Ceph that scripts/ceph started, as a client of it sees it: its ceph.json (conf, pool, the
// client user and keyring) as a storage::RbdConfig. For tests on ctest's `ceph` fixture
// ($UW_CEPH_DIR/ceph.json) and on the test bed (testbed.json's "ceph").
#pragma once

#include <string>

#include "common/json.h"
#include "storage/storage.h"

namespace uw::testing {

inline storage::RbdConfig RbdConfigOf(const Json& ceph) {
  storage::RbdConfig c;
  c.config_file = ceph.value("conf", "");
  c.pool = ceph.value("pool", "rbd");
  if (auto client = ceph.find("client"); client != ceph.end() && client->is_object()) {
    c.user = client->value("user", "uw");
    c.keyring = client->value("keyring", "");
  }
  return c;
}

}  // namespace uw::testing
