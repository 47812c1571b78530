//! Reading a model file into memory that the kernel may back with 2 MiB pages.
//!
//! A decode step reads every weight once, a gigabyte for the 1.5B model: with 4 KiB
//! pages that is a quarter of a million TLB misses per token. Transparent huge pages
//! cut them 512-fold, but with the common `madvise` setting only for memory that asks
//! (`MADV_HUGEPAGE`), which a plain `std::fs::read` buffer does not.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Huge page size on x86-64 and aarch64 Linux.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// The whole of `path`, as [`std::fs::read`], in a buffer advised to use huge pages
/// (where the OS has them; elsewhere, or when the advice is refused, ordinary pages).
///
/// # Errors
/// The I/O errors of opening and reading `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(io::Error::other)?;
    advise_huge_pages(&bytes);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Asks for huge pages over the 2 MiB-aligned part of `buf`'s capacity, before any of
/// it is touched (pages already present keep their size).
#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &Vec<u8>) {
    let base = buf.as_ptr() as usize;
    let start = base.next_multiple_of(HUGE_PAGE);
    let end = (base + buf.capacity()) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside `buf`'s allocation (rounded inwards to whole
        // huge pages), which this process owns. MADV_HUGEPAGE only changes how the
        // kernel may back those pages, never their contents or validity, so no Rust
        // reference is affected; a refusal (EINVAL where THP is off) is just ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_buf: &Vec<u8>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_same_bytes_as_std_across_several_huge_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        // 5 MiB and a bit: at least one whole aligned huge page whatever the base.
        let data: Vec<u8> = (0..(5 << 20) + 12_345u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let got = read(&path).unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "contents differ");
        assert!(read(&dir.path().join("missing")).is_err());
        std::fs::write(&path, b"").unwrap();
        assert!(read(&path).unwrap().is_empty());
    }
}
