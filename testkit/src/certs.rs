//! The certificates of a local control plane: a CA, the API server's serving certificate and
//! the key that signs ServiceAccount tokens.

use std::{net::IpAddr, path::Path};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// File names under the control plane's directory.
pub const CA_CERT: &str = "ca.crt";
pub const SERVING_CERT: &str = "apiserver.crt";
pub const SERVING_KEY: &str = "apiserver.key";
pub const SERVICE_ACCOUNT_KEY: &str = "sa.key";
pub const SERVICE_ACCOUNT_PUBLIC_KEY: &str = "sa.pub";
/// The API server's client certificate towards kubelets (logs, exec).
pub const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
pub const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";

/// Writes the CA, a serving certificate for `addresses` and `names`, the ServiceAccount key and
/// the API server's client certificate towards kubelets into `dir`; returns the CA (PEM).
pub fn write(dir: &Path, addresses: &[IpAddr], names: &[&str]) -> Result<String, String> {
    let fail = |e: rcgen::Error| format!("generating certificates: {e}");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "reserve-local-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
        .map_err(fail)?;

    let mut serving =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(fail)?;
    serving
        .subject_alt_names
        .extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().map_err(fail)?;
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(fail)?;
    let service_account_key = KeyPair::generate().map_err(fail)?;

    let mut kubelet_client = CertificateParams::default();
    kubelet_client
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    kubelet_client
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    kubelet_client.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    kubelet_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let kubelet_client_key = KeyPair::generate().map_err(fail)?;
    let kubelet_client_cert = kubelet_client
        .signed_by(&kubelet_client_key, &ca)
        .map_err(fail)?;

    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    write(CA_CERT, ca.pem())?;
    write(SERVING_CERT, serving_cert.pem())?;
    write(SERVING_KEY, serving_key.serialize_pem())?;
    write(SERVICE_ACCOUNT_KEY, service_account_key.serialize_pem())?;
    write(
        SERVICE_ACCOUNT_PUBLIC_KEY,
        service_account_key.public_key_pem(),
    )?;
    write(KUBELET_CLIENT_CERT, kubelet_client_cert.pem())?;
    write(KUBELET_CLIENT_KEY, kubelet_client_key.serialize_pem())?;
    Ok(ca.pem())
}
