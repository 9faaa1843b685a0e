//! Helpers shared by the fuzz targets.

/// Splits a fuzz input into the stream to feed and the sizes of the reads to feed it in,
/// so that libFuzzer explores read boundaries as well as content: the first byte says
/// how many size bytes follow (up to 15), each a read size (0 counts as 1); the sizes
/// repeat until the stream is used up. No size bytes: one read.
pub fn reads(input: &[u8]) -> (Reads<'_>, &[u8]) {
    let count = input.first().map_or(0, |&n| usize::from(n % 16));
    let sizes_end = (1 + count).min(input.len());
    let sizes = input.get(1..sizes_end).unwrap_or_default();
    (Reads { sizes }, &input[sizes_end..])
}

#[derive(Clone, Copy)]
pub struct Reads<'a> {
    sizes: &'a [u8],
}

impl<'a> Reads<'a> {
    /// The successive reads of `stream`.
    pub fn of<'s>(self, stream: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + use<'s, 'a> {
        let mut sizes = self.sizes.iter().cycle();
        let mut rest = stream;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let size = sizes
                .next()
                .map_or(rest.len(), |&n| usize::from(n.max(1)))
                .min(rest.len());
            let (read, tail) = rest.split_at(size);
            rest = tail;
            Some(read)
        })
    }
}
