use super::*;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn request(dir: &Path, ca: &str) -> IssueRequest {
    IssueRequest {
        ca_cert: dir.join(format!("{ca}.crt")),
        ca_key: dir.join(format!("{ca}.key")),
        server_ca: dir.join(format!("{ca}.crt")),
        server: "https://127.0.0.1:6443".into(),
        tls_server_name: "kubernetes".into(),
        user: "ha-vip-node".into(),
        groups: vec!["ha-vip:nodes".into()],
        valid_for: Duration::from_secs(86_400),
        out_dir: dir.join("out"),
        force: true,
    }
}

/// kubeadm's CA is RSA with a PKCS#1 key ("BEGIN RSA PRIVATE KEY");
/// openssl, not our code, verifies what we signed.
#[test]
fn a_kubeadm_style_rsa_ca_signs_what_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsa8.key",
            "-out",
            "rsa.crt",
            "-subj",
            "/CN=kubernetes",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,digitalSignature",
        ],
    );
    openssl(
        d,
        &["rsa", "-in", "rsa8.key", "-out", "rsa.key", "-traditional"],
    );
    assert!(
        fs::read_to_string(d.join("rsa.key"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let out = issue(&request(d, "rsa"), SystemTime::now()).unwrap();
    let verified = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "rsa.crt",
            "-purpose",
            "sslclient",
            "out/client.crt",
        ],
    );
    assert!(verified.contains("out/client.crt: OK"), "{verified}");
    let subject = openssl(
        d,
        &[
            "x509",
            "-in",
            "out/client.crt",
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ],
    );
    assert!(
        subject.contains("CN = ha-vip-node") && subject.contains("O = ha-vip:nodes"),
        "{subject}"
    );
    assert!(
        subject.contains("TLS Web Client Authentication"),
        "{subject}"
    );
    let mode = fs::metadata(&out.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The kubeconfig is one ha-vip itself loads.
    let kc = fs::read_to_string(&out.kubeconfig).unwrap();
    assert!(
        kc.contains("client-key: \"") && kc.contains("current-context: ha-vip"),
        "{kc}"
    );
}

#[test]
fn an_ec_ca_works_and_a_foreign_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ca in ["ec", "other"] {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN={ca}"),
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        );
    }
    issue(&request(d, "ec"), SystemTime::now()).unwrap();
    let verified = openssl(d, &["verify", "-CAfile", "ec.crt", "out/client.crt"]);
    assert!(verified.contains("OK"), "{verified}");

    let mut req = request(d, "ec");
    req.ca_key = d.join("other.key");
    let err = issue(&req, SystemTime::now()).unwrap_err().to_string();
    assert!(
        err.contains("is not the private key of") && err.contains("ec.crt"),
        "{err}"
    );
    fs::write(
        d.join("garbage.key"),
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    req.ca_key = d.join("garbage.key");
    let err = issue(&req, SystemTime::now()).unwrap_err().to_string();
    assert!(
        err.contains("not a usable CA private key") && !err.contains("c2VjcmV0"),
        "{err}"
    );
    req.ca_key = d.join("missing.key");
    let err = issue(&req, SystemTime::now()).unwrap_err().to_string();
    assert!(
        err.contains("cannot read CA private key") && err.contains("--ca-key"),
        "{err}"
    );
}

#[test]
fn nothing_is_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut req = request(d, "none");
    req.force = false;
    fs::create_dir_all(&req.out_dir).unwrap();
    fs::write(req.out_dir.join("client.crt"), "old").unwrap();
    let err = issue(&req, SystemTime::now()).unwrap_err().to_string();
    assert!(
        err.contains("client.crt exists; refusing to overwrite"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(req.out_dir.join("client.crt")).unwrap(),
        "old"
    );
    req.groups = vec!["system:masters".into()];
    assert!(matches!(
        issue(&req, SystemTime::now()),
        Err(IssueError::AdminGroup(_))
    ));
}
