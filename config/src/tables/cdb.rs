//! The constant database format (D. J. Bernstein's cdb), reader and writer.
//! Postern reads it from memory, so a table can also come as a descriptor.
const HEADER: usize = 2048;

fn hash(key: &[u8]) -> u32 {
    let mut h: u32 = 5381;
    for &c in key {
        h = (h << 5).wrapping_add(h) ^ u32::from(c);
    }
    h
}

fn u32_at(d: &[u8], pos: usize) -> Result<u32, String> {
    d.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "truncated cdb file".to_string())
}

/// Checks that `d` can be a cdb image (its header is there).
pub fn check(d: &[u8]) -> Result<(), String> {
    if d.len() < HEADER {
        return Err("truncated cdb file".into());
    }
    Ok(())
}

/// The value of the first record with `key`, bounds-checked throughout.
pub fn get<'a>(d: &'a [u8], key: &[u8]) -> Result<Option<&'a [u8]>, String> {
    if d.len() < HEADER {
        return Err("truncated cdb file".into());
    }
    let h = hash(key);
    let slot = (h as usize & 255) * 8;
    let (tpos, tlen) = (u32_at(d, slot)? as usize, u32_at(d, slot + 4)? as usize);
    if tlen == 0 {
        return Ok(None);
    }
    let start = (h as usize >> 8) % tlen;
    for i in 0..tlen {
        let e = tpos + ((start + i) % tlen) * 8;
        let (eh, rpos) = (u32_at(d, e)?, u32_at(d, e + 4)? as usize);
        if rpos == 0 {
            return Ok(None);
        }
        if eh != h {
            continue;
        }
        let (klen, vlen) = (u32_at(d, rpos)? as usize, u32_at(d, rpos + 4)? as usize);
        let k = d
            .get(rpos + 8..rpos + 8 + klen)
            .ok_or("truncated cdb record")?;
        if k == key {
            return d
                .get(rpos + 8 + klen..rpos + 8 + klen + vlen)
                .map(Some)
                .ok_or_else(|| "truncated cdb record".into());
        }
    }
    Ok(None)
}

/// Builds a cdb image from (key, value) pairs.
pub fn build(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    let mut buckets: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
    for (k, v) in pairs {
        let pos = out.len() as u32;
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
        let h = hash(k);
        buckets[(h & 255) as usize].push((h, pos));
    }
    let mut header = Vec::with_capacity(HEADER);
    for b in &buckets {
        let tlen = b.len() * 2;
        let tpos = out.len() as u32;
        let mut table = vec![(0u32, 0u32); tlen];
        for &(h, pos) in b {
            let mut i = ((h >> 8) as usize) % tlen;
            while table[i].1 != 0 {
                i = (i + 1) % tlen;
            }
            table[i] = (h, pos);
        }
        for (h, pos) in table {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&pos.to_le_bytes());
        }
        header.extend_from_slice(&tpos.to_le_bytes());
        header.extend_from_slice(&(tlen as u32).to_le_bytes());
    }
    out[..HEADER].copy_from_slice(&header);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
            .map(|i| {
                (
                    format!("key{i}").into_bytes(),
                    format!("value{i}").into_bytes(),
                )
            })
            .collect();
        let img = super::build(&pairs);
        for (k, v) in &pairs {
            assert_eq!(super::get(&img, k).unwrap(), Some(v.as_slice()));
        }
        assert_eq!(super::get(&img, b"missing").unwrap(), None);
        assert!(super::get(&img[..100], b"x").is_err());
        assert_eq!(super::get(&super::build(&[]), b"x").unwrap(), None);
    }
}
