//! The etcd v3 API: mapping between the wire types and the node's types, and the gRPC services.
