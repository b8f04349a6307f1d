//! The integration suite: one binary, one module per tool. Tests named
//! `case_NN_…` are the cases of SPEC §7, so the spec and the suite can be
//! read side by side. A case that runs on both lock backends is a module
//! of that name holding a `flock` and an `etcd` test (see
//! `ccci_tests::both_backends`).

mod abradir;
mod assembly;
mod attacks;
mod chaos;
mod docs;
mod etcd;
mod etcd_bounds;
mod etcd_hosts;
mod etcd_tls;
mod field;
mod guard;
mod hold;
mod hostile;
mod janitor;
mod lock;
mod newcomer;
mod operators;
mod place;
mod state;
mod tree;
