//! Diffie-Hellman parameters from a PKCS#3 `DH PARAMETERS` PEM file.

use crate::error::Reason;
use crate::pem;
use x509_cert::der::asn1::UintRef;
use x509_cert::der::{Decode, Reader, SliceReader};

/// A DH group: prime and generator (big-endian, no leading zeros), and
/// the private value length PKCS#3 may give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhParams {
    pub prime: Vec<u8>,
    pub generator: Vec<u8>,
    pub private_value_length: Option<u32>,
}

impl DhParams {
    /// As GnuTLS imports them: the first `DH PARAMETERS` block, a DHParameter
    /// SEQUENCE, neither number zero.
    pub fn from_pem(data: &[u8]) -> Result<DhParams, Reason> {
        let der = pem::first(data, &["DH PARAMETERS"])?;
        let params = Self::from_der(&der).map_err(|_| Reason::Der)?;
        let zero = |n: &[u8]| n.iter().all(|&b| b == 0);
        if zero(&params.prime) || zero(&params.generator) {
            return Err(Reason::IllegalParameter);
        }
        Ok(params)
    }

    fn from_der(der: &[u8]) -> x509_cert::der::Result<DhParams> {
        let mut reader = SliceReader::new(der)?;
        let params = reader.sequence(|r| {
            let prime = UintRef::decode(r)?;
            let generator = UintRef::decode(r)?;
            let private_value_length = Option::<u32>::decode(r)?;
            Ok(DhParams {
                prime: prime.as_bytes().to_vec(),
                generator: generator.as_bytes().to_vec(),
                private_value_length,
            })
        })?;
        reader.finish(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pkcs3() {
        // SEQUENCE { INTEGER 23, INTEGER 5 } in PEM.
        let pem = b"-----BEGIN DH PARAMETERS-----\nMAYCARcCAQU=\n-----END DH PARAMETERS-----\n";
        let params = DhParams::from_pem(pem).expect("params");
        assert_eq!(params.prime, vec![23]);
        assert_eq!(params.generator, vec![5]);
        assert_eq!(params.private_value_length, None);
        // SEQUENCE { INTEGER 0, INTEGER 5 }
        let zero = b"-----BEGIN DH PARAMETERS-----\nMAYCAQACAQU=\n-----END DH PARAMETERS-----\n";
        assert_eq!(DhParams::from_pem(zero), Err(Reason::IllegalParameter));
        assert_eq!(DhParams::from_pem(b"junk"), Err(Reason::Base64Header));
        let bad = b"-----BEGIN DH PARAMETERS-----\nAAEC\n-----END DH PARAMETERS-----\n";
        assert_eq!(DhParams::from_pem(bad), Err(Reason::Der));
    }
}
