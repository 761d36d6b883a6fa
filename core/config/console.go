package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Console configures the web console served at /console/ on the API's port.
type Console struct {
	// Enabled serves the console (the default).
	Enabled bool `yaml:"enabled"`
	// SessionTTL is how long a console sign-in lasts (default 12h).
	SessionTTL Duration `yaml:"session_ttl"`
	// FrameAncestors lists the origins allowed to embed the console in a frame (the tenant portal inside a
	// product); empty forbids framing (X-Frame-Options: DENY, frame-ancestors 'none').
	FrameAncestors []string `yaml:"frame_ancestors"`
	// PublicURL is the console's address as users reach it (e.g. https://sluice.example.com), used to build
	// portal links; empty takes the scheme and host of the request that asks for the link.
	PublicURL string `yaml:"public_url,omitempty"`
}

// maxSessionTTL bounds a console sign-in: a forgotten browser should not stay signed in for weeks.
const maxSessionTTL = Duration(30 * 24 * 3600e9)

func (l *loader) validateConsole(c *Console) {
	if c.SessionTTL <= 0 || c.SessionTTL > maxSessionTTL {
		l.errorf("console.session_ttl", "must be a duration from 1m to 720h, such as 12h")
	} else if c.SessionTTL < Duration(60e9) {
		l.errorf("console.session_ttl", "%s is too short to use the console; use at least 1m, such as 12h", c.SessionTTL.D())
	}
	for i, a := range c.FrameAncestors {
		p := fmt.Sprintf("console.frame_ancestors[%d]", i)
		u, err := url.Parse(a)
		if a == "'self'" {
			continue
		}
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") ||
			u.RawQuery != "" || strings.ContainsAny(a, " ;,'\"") {
			l.errorf(p, "%q is not an origin; use 'self' or an origin such as https://app.example.com", a)
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
			l.errorf("console.public_url", "%q must be an http(s) URL such as https://sluice.example.com", c.PublicURL)
		}
	}
}
