//! CPU lists and masks as sysfs and the config write them. A set that
//! parses, written back in either format, parses to the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use venussup::util::cpulist::CpuSet;

fn round_trips(set: &CpuSet) {
    let list = set.to_string();
    assert_eq!(CpuSet::parse_list(&list).as_ref(), Ok(set), "list {list:?}");
    let mask = set.to_mask(1);
    assert_eq!(CpuSet::parse_mask(&mask).as_ref(), Ok(set), "mask {mask:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(set) = CpuSet::parse_list(&text) {
        round_trips(&set);
    }
    if let Ok(set) = CpuSet::parse_mask(&text) {
        round_trips(&set);
    }
});
