use super::*;

fn ok(yaml: &str) -> Config {
    Config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn minimal() {
    let c = ok(
        "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  kubeconfig: /etc/kubernetes/admin.conf\n",
    );
    assert_eq!(c.vips[0].to_string(), "10.0.0.100/32");
}
