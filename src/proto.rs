//! Generated code for our control protocol and our subset of Ray's GCS protocol.

pub mod control {
    tonic::include_proto!("rayhpc.control.v1");
}

pub mod ray {
    //! The minimal subset of Ray's `ray.rpc` and `ray.rpc.autoscaler` we use; field numbers match
    //! Ray 2.60.0 and a test checks them against the installed wheel's descriptors.
    pub mod rpc {
        tonic::include_proto!("ray.rpc");

        pub mod autoscaler {
            tonic::include_proto!("ray.rpc.autoscaler");
        }
    }
    pub use rpc::autoscaler;
}

/// Serialized descriptors of every proto we compile (for the wheel-compatibility test).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ray_hpc_descriptors.bin"));
