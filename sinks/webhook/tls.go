package webhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
)

// TLS is a destination's `tls` block: a client certificate for mTLS, the CA the receiver's certificate must
// chain to, the name to verify it against and the lowest TLS version. Each PEM field takes a file path or the
// PEM itself; files are read again when they change (checked on each attempt), so rotated certificates are
// picked up without a reload.
type TLS struct {
	ClientCert string `yaml:"client_cert,omitempty" desc:"client certificate (chain) for mTLS: a PEM file path or inline PEM; needs client_key"`
	ClientKey  string `yaml:"client_key,omitempty" secret:"true" desc:"the client certificate's private key: a PEM file path or inline PEM"`
	CA         string `yaml:"ca,omitempty" desc:"CA certificate(s) the receiver's certificate must chain to, instead of the system roots: a PEM file path or inline PEM"`
	ServerName string `yaml:"server_name,omitempty" desc:"name to verify the receiver's certificate against (and send as SNI); default: the url's host"`
	MinVersion string `yaml:"min_version,omitempty" default:"1.2" desc:"lowest TLS version: 1.2 or 1.3"`
}

// inlinePEM reports whether a PEM field holds the PEM itself rather than a file path.
func inlinePEM(v string) bool { return strings.Contains(v, "-----BEGIN ") }

func (t *TLS) validate(add func(path, format string, args ...any)) {
	if (t.ClientCert == "") != (t.ClientKey == "") {
		if t.ClientCert == "" {
			add("tls.client_cert", "is required with client_key: give the certificate that goes with the key")
		} else {
			add("tls.client_key", "is required with client_cert: give the certificate's private key")
		}
	}
	switch t.MinVersion {
	case "", "1.2", "1.3":
	default:
		add("tls.min_version", "%q is not supported; use 1.2 or 1.3", t.MinVersion)
	}
	if strings.ContainsAny(t.ServerName, "/:@ ") {
		add("tls.server_name", "%q is not a host name", t.ServerName)
	}
}

// files lists the PEM fields that are file paths (the ones to watch for changes) and their config paths.
func (t *TLS) files() (paths, fields []string) {
	for _, f := range []struct{ field, v string }{
		{"tls.client_cert", t.ClientCert}, {"tls.client_key", t.ClientKey}, {"tls.ca", t.CA},
	} {
		if f.v != "" && !inlinePEM(f.v) {
			paths, fields = append(paths, f.v), append(fields, f.field)
		}
	}
	return paths, fields
}

// pem returns a PEM field's content: inline, or read from its file.
func pemOf(path, v string) ([]byte, error) {
	if inlinePEM(v) {
		return []byte(v), nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// config builds the client TLS config from the block. Errors name the field.
func (t *TLS) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if t.ClientCert != "" {
		certPEM, err := pemOf("tls.client_cert", t.ClientCert)
		if err != nil {
			return nil, err
		}
		keyPEM, err := pemOf("tls.client_key", t.ClientKey)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("tls.client_cert, tls.client_key: not a PEM certificate and its matching key: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.CA != "" {
		caPEM, err := pemOf("tls.ca", t.CA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("tls.ca: holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// stamp identifies the current content of the watched files by modification time and size; "" when there
// are none. A file that cannot be read is part of the stamp too, so it is retried on the next attempt.
func stamp(files []string) string {
	if len(files) == 0 {
		return ""
	}
	var b strings.Builder
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			b.WriteString("missing;")
			continue
		}
		fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return b.String()
}

// TLS alerts a server sends when it refuses the client's certificate (RFC 8446 §6.2).
var certAlerts = map[uint64]string{
	42: "bad certificate", 43: "unsupported certificate", 44: "certificate revoked", 45: "certificate expired",
	46: "certificate unknown", 48: "unknown ca", 49: "access denied", 116: "certificate required",
}

// CertProblem says which certificate check failed.
type CertProblem int

// Certificate problems.
const (
	CertUnknownAuthority CertProblem = iota + 1 // the receiver's certificate does not chain to a trusted CA
	CertHostname                                // the receiver's certificate is for another name
	CertInvalid                                 // the receiver's certificate is expired or otherwise invalid
	CertRefused                                 // the receiver refused Sluice's client certificate (or its absence)
)

// CertError is a certificate failure of a TLS handshake. No retry fixes it: the attempt fails permanently.
type CertError struct {
	Problem CertProblem
	msg     string
	Err     error
}

func (e *CertError) Error() string { return e.msg + ": " + e.Err.Error() }
func (e *CertError) Unwrap() error { return e.Err }

// certProblem names a certificate failure of a TLS handshake, nil for anything else.
func certProblem(err error) *CertError {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return &CertError{CertUnknownAuthority, "tls: the receiver's certificate is signed by an unknown authority: " +
			"set tls.ca to the CA that signed it", err}
	case errors.As(err, &host):
		return &CertError{CertHostname, "tls: the receiver's certificate is not valid for " + host.Host +
			": fix the url or set tls.server_name", err}
	case errors.As(err, &invalid):
		return &CertError{CertInvalid, "tls: the receiver's certificate is invalid", err}
	}
	// A received alert is a *net.OpError whose Op is "remote error" and whose Err is crypto/tls's unexported
	// alert type, a uint8.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
			if name, ok := certAlerts[v.Uint()]; ok {
				return &CertError{CertRefused, fmt.Sprintf("tls: the receiver refused the client certificate (alert %q): "+
					"check tls.client_cert and tls.client_key, and that the receiver trusts their CA", name), err}
			}
		}
	}
	return nil
}

// Files lists the local files a config makes Sluice read (the tls block's PEM fields given as paths). A
// caller that builds destinations for someone other than the operator (the admin API, tenants) can refuse
// them: a path names a file on Sluice's host, not the caller's.
func (c *Config) Files() []string {
	if c.TLS == nil {
		return nil
	}
	paths, _ := c.TLS.files()
	return paths
}

// FileFields names the config fields (tls.ca, ...) that Files reads: what a refusal of Files points at.
func (c *Config) FileFields() []string {
	if c.TLS == nil {
		return nil
	}
	_, fields := c.TLS.files()
	return fields
}
