// XenStoreServer: see the issue that builds it. This file keeps the target non-empty until then.
