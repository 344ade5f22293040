//! GPU ids as written by people and drivers: PCI bus ids and UUIDs,
//! normalised to one spelling.

/// A GPU UUID as the driver prints it, `GPU-` and lower-case hex in dashed
/// groups (`GPU-8e5c1f2a-0b3c-4d5e-8f90-a1b2c3d4e5f6`); `None` when it is
/// not one.
pub fn normalize_uuid(text: &str) -> Option<String> {
    let t = text.trim();
    let rest = t
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("GPU-"))
        .map(|_| &t[4..])?;
    let groups: Vec<&str> = rest.split('-').collect();
    let hex = |g: &&str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit());
    (groups.iter().all(hex) && rest.len() >= 8)
        .then(|| format!("GPU-{}", rest.to_ascii_lowercase()))
}

/// A PCI bus id as `dddd:bb:dd.f` in lower case (`01:00.0` gets domain
/// `0000`); `None` when it is not one.
pub fn normalize_bus_id(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    let full = if lower.matches(':').count() == 1 {
        format!("0000:{lower}")
    } else {
        lower
    };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && matches!(function.as_bytes(), [b'0'..=b'7']))
    .then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_are_normalized() {
        assert_eq!(
            normalize_bus_id("0000:01:00.0").as_deref(),
            Some("0000:01:00.0")
        );
        assert_eq!(normalize_bus_id("41:00.0").as_deref(), Some("0000:41:00.0"));
        assert_eq!(
            normalize_bus_id("0000:C1:00.0").as_deref(),
            Some("0000:c1:00.0")
        );
        assert_eq!(normalize_bus_id("nvidia0"), None);
        assert_eq!(normalize_bus_id("0000:01:00.9"), None);
    }
}
