//! The mount table, `/proc/self/mountinfo`: its one parser, and where the
//! cgroup hierarchies are mounted.

/// Where the mount table is read (under the fs root).
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One cgroup mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The mount point, a host path.
    pub point: String,
    /// `true` for cgroup2, `false` for a v1 hierarchy.
    pub unified: bool,
    /// Super options: for v1 the controllers bound to it (`cpuset`,
    /// `memory`, `cpu,cpuacct`...).
    pub options: Vec<String>,
}

impl CgroupMount {
    /// A v1 hierarchy that carries `controller`.
    pub fn has_v1(&self, controller: &str) -> bool {
        !self.unified && self.options.iter().any(|o| o == controller)
    }
}

/// One line of the mount table: where, what filesystem, its super options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: String,
    pub fstype: String,
    pub super_options: String,
}

/// The mounts in a mountinfo text, in order. A line is
/// `id parent major:minor root point options [optional...] - fstype source super-options`.
pub fn parse(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            Some(Mount {
                point: unescape(point),
                fstype: fstype.to_string(),
                super_options: right.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Mount table entries as (mount point, filesystem type).
pub fn points_and_types(mountinfo: &str) -> Vec<(String, String)> {
    parse(mountinfo)
        .into_iter()
        .map(|m| (m.point, m.fstype))
        .collect()
}

/// The cgroup mounts in a mountinfo text, in order.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    parse(mountinfo)
        .into_iter()
        .filter_map(|m| {
            let unified = match m.fstype.as_str() {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                point: m.point,
                unified,
                options: m.super_options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style
/// octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, b| acc.wrapping_mul(8).wrapping_add(b - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's VM: v1 controllers, cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 24 0:25 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
28 27 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
29 27 0:27 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
30 27 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 27 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 27 0:30 / /sys/fs/cgroup/my\\040mount rw,relatime master:3 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn finds_v1_controllers_and_the_unified_mount() {
        let mounts = cgroup_mounts(HYBRID);
        assert_eq!(mounts.len(), 5);
        assert!(mounts[1].has_v1("cpuset") && mounts[2].has_v1("memory"));
        assert!(mounts[3].unified && !mounts[3].has_v1("cpuset"));
        assert_eq!(mounts[4].point, "/sys/fs/cgroup/my mount");
        assert!(mounts[4].has_v1("cpuacct"));
    }

    #[test]
    fn mount_table_lines_give_point_and_type() {
        let t = "36 25 0:32 / /mnt/huge\\040pages rw,relatime shared:17 - hugetlbfs hugetlbfs rw,pagesize=2M\n\
                 22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(
            points_and_types(t),
            vec![
                ("/mnt/huge pages".to_string(), "hugetlbfs".to_string()),
                ("/".to_string(), "ext4".to_string())
            ]
        );
    }
}
