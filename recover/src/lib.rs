//! cfy-recover: rebuilds a failed Cloudify Manager VM on OpenStack, keeping its private IP
//! (Neutron port), floating IP and data volume, then restores a snapshot through cfy-init's
//! hooks API. Every mutating step is journalled first so `resume` can finish after a crash.
