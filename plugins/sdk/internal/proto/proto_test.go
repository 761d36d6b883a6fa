package proto

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the code into a temporary directory with the Makefile's pinned
// generators and compares it with the committed files.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc is not installed (apt-get install -y protobuf-compiler; .ci/services/protoc.sh does it in CI)")
	}
	if testing.Short() {
		t.Skip("builds the code generators")
	}
	out := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", filepath.Join("..", "..", "..", ".."), "proto",
		"PROTO_OUT="+out, "PROTO_TOOLS="+filepath.Join(out, "tools"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make proto: %v\n%s", err, b)
	}
	for _, name := range []string{"sink.pb.go", "sink_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dropProtocVersion(got), dropProtocVersion(want)) {
			t.Errorf("%s is stale: run `make proto` and commit the result", name)
		}
	}
}

// dropProtocVersion removes the header line naming protoc's version, which differs between distributions
// without changing the code.
func dropProtocVersion(b []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("// \tprotoc ")) || bytes.HasPrefix(line, []byte("// - protoc ")) {
			continue
		}
		out = append(out, line)
	}
	return bytes.Join(out, []byte("\n"))
}
