//! gzip for large answers, compressed on several threads at once.
//!
//! Prometheus asks every scrape for gzip, and at 1,000 targets `/metrics`
//! is 3.3 MiB: at the fastest level one thread takes longer to compress it
//! than to render it. The body is cut into pieces of [`PIECE`] bytes,
//! each compressed on its own (raw deflate, ended by a sync flush so the
//! pieces join byte-aligned, the last one ended as the stream's final
//! block), as `pigz` does; the pieces are joined behind one gzip header, and
//! their CRC-32s combined for the trailer. A piece does not refer back into
//! the one before, which costs a fraction of a percent of the size.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Bytes per independently compressed piece: large enough that the lost
/// back-references do not matter, small enough to share a 3 MiB body out.
const PIECE: usize = 256 * 1024;

/// At most this many threads compress one body (the calling thread
/// included).
const MAX_THREADS: usize = 4;

/// `body` as a gzip member, compressed at the fastest level; `None` if the
/// compressor failed (never expected: the caller then sends it as is).
pub(super) fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let pieces: Vec<&[u8]> = if body.is_empty() {
        vec![body]
    } else {
        body.chunks(PIECE).collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(pieces.len());
    let last = pieces.len() - 1;
    // Thread `t` compresses pieces t, t + threads, t + 2 × threads, …
    let compress_share = |t: usize| -> Option<Vec<(usize, Vec<u8>, Crc)>> {
        (t..pieces.len())
            .step_by(threads)
            .map(|i| {
                let mut crc = Crc::new();
                crc.update(pieces[i]);
                Some((i, deflate_piece(pieces[i], i == last)?, crc))
            })
            .collect()
    };
    let mut compressed: Vec<(usize, Vec<u8>, Crc)> = if threads == 1 {
        compress_share(0)?
    } else {
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads)
                .map(|t| scope.spawn(move || compress_share(t)))
                .collect();
            let mut all = compress_share(0)?;
            for other in others {
                all.extend(other.join().ok()??);
            }
            Some(all)
        })?
    };
    compressed.sort_unstable_by_key(|(i, _, _)| *i);
    let size: usize = compressed.iter().map(|(_, bytes, _)| bytes.len()).sum();
    let mut out = Vec::with_capacity(HEADER.len() + size + 8);
    out.extend_from_slice(&HEADER);
    let mut crc = Crc::new();
    for (_, bytes, piece_crc) in &compressed {
        out.extend_from_slice(bytes);
        crc.combine(piece_crc);
    }
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32, as RFC 1952 says.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Some(out)
}

/// A gzip header: deflate, no flags, no time, fastest level, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// One piece as raw deflate: ended by a sync flush (an empty stored block,
/// byte-aligned, not final), or as the final block when `last`.
fn deflate_piece(piece: &[u8], last: bool) -> Option<Vec<u8>> {
    let mut compress = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(piece.len() / 4 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&piece[consumed..], &mut out, flush)
            .ok()?;
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once every byte is in and the
            // compressor left room in `out` (it stops only when full).
            Status::Ok | Status::BufError => {
                !last && compress.total_in() as usize == piece.len() && out.len() < out.capacity()
            }
        };
        if done {
            return Some(out);
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    /// Bodies around the piece boundaries, empty and tiny, repetitive and
    /// not, come back byte for byte; a large one is also compressed.
    #[test]
    fn gzip_pieces_join_into_one_stream_that_decompresses_to_the_body() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| {
                format!("rpo_backlog_bytes{{target=\"db-{i:05}\"}} {}\n", i * 7).into_bytes()
            })
            .collect();
        assert!(text.len() > 4 * PIECE);
        let mut bodies = vec![Vec::new(), b"x".to_vec(), noise(PIECE), noise(PIECE + 1)];
        bodies.push(noise(3 * PIECE - 1));
        bodies.push(text.clone());
        for body in &bodies {
            let compressed = gzip(body).expect("compresses");
            assert_eq!(gunzip(&compressed), *body, "{} bytes", body.len());
        }
        let compressed = gzip(&text).unwrap();
        assert!(compressed.len() < text.len() / 4, "{}", compressed.len());
    }
}
