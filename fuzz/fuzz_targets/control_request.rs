//! The control protocol: any request line. A request that parses
//! serialises back to a line that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use venussup::control::{Request, Response};

fuzz_target!(|data: &[u8]| {
    match Request::parse(data) {
        Ok(request) => {
            let line = serde_json::to_vec(&request).expect("a request serialises");
            assert_eq!(
                Request::parse(&line).as_ref(),
                Ok(&request),
                "round trip of {request:?}"
            );
        }
        Err(error) => {
            assert!(!error.is_empty());
            // The answer the server sends back is one line.
            let answer = Response::err(error).to_line();
            assert_eq!(answer.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(answer.ends_with(b"\n"));
        }
    }
});
