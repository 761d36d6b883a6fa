package webhook

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sinks"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial = big.NewInt(1)
var serialMu sync.Mutex

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial = new(big.Int).Add(serial, big.NewInt(1))
	return serial
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate: a server one for 127.0.0.1 when server is set, else a client one.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"receiver.test"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// mtlsReceiver is an HTTPS receiver that requires a client certificate issued by clientCA and records the
// common name of each request's client certificate.
type mtlsReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	cns []string
}

func newMTLSReceiver(t *testing.T, serverCA, clientCA *testCA) *mtlsReceiver {
	t.Helper()
	rc := &mtlsReceiver{}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.cns = append(rc.cns, r.TLS.PeerCertificates[0].Subject.CommonName)
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	certPEM, keyPEM := serverCA.issue(t, "receiver", true)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	rc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	rc.StartTLS()
	t.Cleanup(rc.Close)
	return rc
}

func (rc *mtlsReceiver) lastCN() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.cns) == 0 {
		return ""
	}
	return rc.cns[len(rc.cns)-1]
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	// Written beside and renamed into place, as cert-manager and Kubernetes secrets do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestMTLS(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	rc := newMTLSReceiver(t, ca, ca)
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.pem")
	certA, keyA := ca.issue(t, "client-a", false)
	writeFile(t, certFile, certA)
	writeFile(t, keyFile, keyA)
	writeFile(t, caFile, ca.pem)

	s := newSink(t, rc.URL, func(c *Config) { c.TLS = &TLS{ClientCert: certFile, ClientKey: keyFile, CA: caFile} }, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatalf("good client certificate: %v", err)
	}
	if cn := rc.lastCN(); cn != "client-a" {
		t.Fatalf("receiver saw client %q", cn)
	}

	// The certificate is rotated on disk: the next attempt presents the new one.
	certB, keyB := ca.issue(t, "client-b", false)
	writeFile(t, certFile, certB)
	writeFile(t, keyFile, keyB)
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if cn := rc.lastCN(); cn != "client-b" {
		t.Fatalf("after rotation the receiver saw client %q, want client-b", cn)
	}

	// A half-written rotation (a key that does not match) keeps the last good certificate in use.
	certC, _ := ca.issue(t, "client-c", false)
	writeFile(t, certFile, certC)
	if _, err := sendOne(t, s, testEvent()); err != nil || rc.lastCN() != "client-b" {
		t.Fatalf("mismatched pair: %v, client %q; want client-b kept", err, rc.lastCN())
	}

	// Inline PEM works the same.
	s = newSink(t, rc.URL, func(c *Config) {
		c.TLS = &TLS{ClientCert: string(certA), ClientKey: string(keyA), CA: string(ca.pem), MinVersion: "1.3"}
	}, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil || rc.lastCN() != "client-a" {
		t.Fatalf("inline PEM: %v, client %q", err, rc.lastCN())
	}
}

func TestMTLSCertificateErrorsArePermanent(t *testing.T) {
	ca, other := newTestCA(t, "test-ca"), newTestCA(t, "other-ca")
	rc := newMTLSReceiver(t, ca, ca)
	certA, keyA := ca.issue(t, "client-a", false)
	certX, keyX := other.issue(t, "client-x", false)

	for _, tt := range []struct {
		name  string
		tls   TLS
		check func(err error) bool
	}{
		{"unknown authority", TLS{ClientCert: string(certA), ClientKey: string(keyA), CA: string(other.pem)},
			func(err error) bool {
				var e x509.UnknownAuthorityError
				return errors.As(err, &e) && isCert(err, CertUnknownAuthority)
			}},
		{"hostname mismatch", TLS{ClientCert: string(certA), ClientKey: string(keyA), CA: string(ca.pem), ServerName: "elsewhere.test"},
			func(err error) bool { var e x509.HostnameError; return errors.As(err, &e) && isCert(err, CertHostname) }},
		{"client certificate refused", TLS{ClientCert: string(certX), ClientKey: string(keyX), CA: string(ca.pem)},
			func(err error) bool { return isCert(err, CertRefused) }},
		{"no client certificate", TLS{CA: string(ca.pem)},
			func(err error) bool { return isCert(err, CertRefused) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(t, rc.URL, func(c *Config) { c.TLS = &tt.tls }, sinks.Env{})
			_, err := sendOne(t, s, testEvent())
			if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent || !tt.check(err) {
				t.Fatalf("got %v, want a permanent error naming the cause", err)
			}
		})
	}

	// server_name set to a name the certificate holds verifies against it.
	s := newSink(t, rc.URL, func(c *Config) {
		c.TLS = &TLS{ClientCert: string(certA), ClientKey: string(keyA), CA: string(ca.pem), ServerName: "receiver.test"}
	}, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatalf("server_name: %v", err)
	}
}

func TestMTLSMissingFileFailsNew(t *testing.T) {
	c := validConfig()
	c.TLS = &TLS{ClientCert: "/nonexistent/client.pem", ClientKey: "/nonexistent/client.key"}
	_, err := New(t.Context(), c, sinks.Env{})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "tls.client_cert") {
		t.Fatalf("missing certificate file: %v, want an error naming tls.client_cert", err)
	}
}

func isCert(err error, p CertProblem) bool {
	var ce *CertError
	return errors.As(err, &ce) && ce.Problem == p
}
