//! Block device names from the kernel's `dev_t` (major << 20 | minor, as `block_device.bd_dev`
//! holds it): `/sys/dev/block/<major>:<minor>/uevent` says `DEVNAME=`.

use std::fs;

/// The kernel's split of a `dev_t`: 12 bits of major, 20 of minor.
const MINOR_BITS: u32 = 20;

/// `(major, minor)` of a kernel `dev_t`.
pub(crate) fn split(dev: u32) -> (u32, u32) {
    (dev >> MINOR_BITS, dev & ((1 << MINOR_BITS) - 1))
}

/// The device's name (`vda`, `nvme0n1p2`), or `major:minor` when sysfs does not say.
pub(crate) fn name(dev: u32) -> String {
    let (major, minor) = split(dev);
    fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|text| devname(&text))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// `DEVNAME=` of a uevent file.
fn devname(uevent: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_string)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_t_splits_as_the_kernel_packs_it() {
        assert_eq!(split((253 << 20) | 1), (253, 1));
        assert_eq!(split(8 << 20), (8, 0));
    }

    #[test]
    fn the_name_comes_from_devname_or_the_numbers() {
        assert_eq!(
            devname("MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").as_deref(),
            Some("vda")
        );
        assert_eq!(devname("MAJOR=253\n"), None);
        // No such device: its numbers.
        assert_eq!(name((4095 << 20) | 4095), "4095:4095");
    }
}
