package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// envOr returns the environment variable name, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// apiClient is how the subcommands that talk to a running Sluice (publish, replay) reach its HTTP API.
type apiClient struct {
	server, key string
}

// clientFlags registers --server and --key on fs, with the defaults every API subcommand shares: the
// environment first, then the local demo setup (config.example.yaml's listen address and dev admin key).
func clientFlags(fs *flag.FlagSet) *apiClient {
	c := &apiClient{}
	fs.StringVar(&c.server, "server", envOr("SLUICE_SERVER", "http://127.0.0.1:8080"), "Sluice base URL ($SLUICE_SERVER)")
	fs.StringVar(&c.key, "key", envOr("SLUICE_API_KEY", envOr("SLUICE_ADMIN_KEY", "dev-admin-key")), "API key ($SLUICE_API_KEY, else $SLUICE_ADMIN_KEY)")
	return c
}

// check reports a --server that cannot be a Sluice base URL, before anything is sent.
func (c *apiClient) check() error {
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server %q is not a URL; give the base URL like http://127.0.0.1:8080 (or set $SLUICE_SERVER)", c.server)
	}
	return nil
}

// apiResponse is an answer of the API: its status and (up to 1 MiB of) its body.
type apiResponse struct {
	StatusCode int
	Status     string
	Body       []byte
}

// post sends body (already JSON) to path with the key, within 30 seconds. An error means no answer came.
func (c *apiClient) post(ctx context.Context, path string, body []byte) (apiResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.server, "/")+path, bytes.NewReader(body))
	if err != nil {
		return apiResponse{}, fmt.Errorf("--server %q: %w", c.server, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return apiResponse{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return apiResponse{}, fmt.Errorf("read the answer of %s: %w", req.URL, err)
	}
	return apiResponse{StatusCode: resp.StatusCode, Status: resp.Status, Body: out}, nil
}

// errorMessage is the API error's message for a person: `{"error": {"message", "field"}}` as
// "field: message (HTTP status)", or the raw body when the answer is not in that shape (a proxy's page).
func (r apiResponse) errorMessage() string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	if json.Unmarshal(r.Body, &e) == nil && e.Error.Message != "" {
		msg := e.Error.Message
		if e.Error.Field != "" {
			msg = e.Error.Field + ": " + msg
		}
		return fmt.Sprintf("%s (%s)", msg, r.Status)
	}
	if b := bytes.TrimSpace(r.Body); len(b) > 0 {
		return fmt.Sprintf("%s: %s", r.Status, b)
	}
	return r.Status
}
