//! Reading a fuzz input as a script of events, a byte code: the shared
//! cursor of the `control_server` and `metrics_http` targets.

/// The rest of an input, read from the front; past the end every number
/// is 0 and every byte string empty.
#[derive(Debug)]
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Three bytes, little-endian.
    pub fn u24(&mut self) -> usize {
        usize::from(self.u16()) | usize::from(self.u8()) << 16
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_little_endian_and_zero_past_the_end() {
        let mut c = Cursor::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.u8(), 1);
        assert_eq!(c.u16(), 0x0302);
        assert_eq!(c.u24(), 0x0006_0504);
        assert_eq!(c.take(5), &[7]);
        assert!(c.is_empty());
        assert_eq!(c.u16(), 0);
    }
}
