"""HTTP plumbing shared by every route: errors, request bodies, access control and the
auth-failure limiter, the JSON-error protocol handler, the API description."""
