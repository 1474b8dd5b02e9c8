//! One gRPC message on the wire (`otlp_grpc` frames its input with it, the
//! seed writer its seeds): the compressed flag, the length, the message,
//! compressed when the encoding is gzip or zstd.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

pub fn frame(message: &[u8], encoding: Option<&str>) -> Bytes {
    let (flag, payload) = match encoding {
        Some("gzip") => {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(message).expect("writing to a Vec");
            (1, z.finish().expect("writing to a Vec"))
        }
        Some("zstd") => (1, zstd::bulk::compress(message, 1).expect("zstd")),
        _ => (0, message.to_vec()),
    };
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flag);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.freeze()
}
