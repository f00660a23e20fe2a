//! Fixtures for the tests of the crates that read what the transform reads (feature `testkit`).

use choreo_validation::Compression;
use std::io::Write;

/// A decompression bomb: `mib` MiB of `fill` as `mib` gzip members or zstd frames of one MiB
/// each, a file about a thousandth of that (gzip) or far less (zstd).
pub fn bomb(compression: Compression, fill: u8, mib: usize) -> Vec<u8> {
    let zeros = vec![fill; 1 << 20];
    let one = match compression {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&zeros).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(&zeros[..], 19).unwrap(),
        Compression::None => zeros,
    };
    one.repeat(mib)
}
