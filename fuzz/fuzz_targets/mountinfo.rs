//! The one mountinfo parser and the cgroup mounts found through it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use venussup::util::mountinfo;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mounts = mountinfo::parse(&text);
    assert!(mounts.len() <= text.lines().count());
    let cgroups = mountinfo::cgroup_mounts(&text);
    assert!(cgroups.len() <= mounts.len());
    for m in &cgroups {
        std::hint::black_box(m.has_v1("cpuset"));
    }
    assert_eq!(mountinfo::points_and_types(&text).len(), mounts.len());
});
