//! etcd's JSON gateway (`/v3/...`): JSON over HTTP with grpc-gateway's mapping.
