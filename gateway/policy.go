package gateway

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one allow-list entry: a host pattern and a port. Host is a name
// ("registry.npmjs.org"), a wildcard over a domain's subdomains
// ("*.example.com": a.example.com and a.b.example.com, not example.com
// itself), or "*" (any name; meaningful only in a ceiling). Port 0 means any
// port.
type Rule struct {
	Host string
	Port int
}

func (r Rule) String() string {
	if r.Port == 0 {
		return r.Host + ":*"
	}
	return r.Host + ":" + strconv.Itoa(r.Port)
}

// ParseRules reads an allow-list as the operator and the settings file
// write it: entries separated by commas or white space, each "host",
// "host:port" or "host:*"; a bare host means port 443. Names are compared
// without case and without a trailing dot.
func ParseRules(s string) ([]Rule, error) {
	var rules []Rule
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		r, err := ParseRule(f)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// ParseRule reads one allow-list entry (see ParseRules).
func ParseRule(s string) (Rule, error) {
	host, port := s, "443"
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	host = normalHost(host)
	if !validPattern(host) {
		return Rule{}, fmt.Errorf("egress rule %q: %q is not a host name or *.domain wildcard", s, host)
	}
	if port == "*" {
		return Rule{Host: host}, nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return Rule{}, fmt.Errorf("egress rule %q: port %q is not 1-65535 or *", s, port)
	}
	return Rule{Host: host, Port: n}, nil
}

func normalHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// validPattern accepts "*", "*.domain" and plain names of letters, digits,
// hyphens and dots. Addresses are not names: a rule never allows an IP
// literal, so the sandbox cannot name its way around the address checks.
func validPattern(h string) bool {
	if h == "*" {
		return true
	}
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 || strings.Contains(h, "..") || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// matchHost reports whether the host pattern p covers the name host.
func matchHost(p, host string) bool {
	switch {
	case p == "*":
		return true
	case strings.HasPrefix(p, "*."):
		return strings.HasSuffix(host, p[1:]) && len(host) > len(p)-1
	default:
		return p == host
	}
}

// Allows reports whether r lets the sandbox reach host:port.
func (r Rule) Allows(host string, port int) bool {
	return (r.Port == 0 || r.Port == port) && matchHost(r.Host, normalHost(host))
}

// covers reports whether everything r allows, ceiling allows too.
func (ceiling Rule) covers(r Rule) bool {
	if ceiling.Port != 0 && ceiling.Port != r.Port {
		return false
	}
	if ceiling.Host == "*" || ceiling.Host == r.Host {
		return true
	}
	// "*.example.com" covers "a.example.com" and "*.a.example.com".
	return strings.HasPrefix(ceiling.Host, "*.") && r.Host != "*" &&
		matchHost(ceiling.Host, strings.TrimPrefix(r.Host, "*."))
}

// AllowList is a task's effective allow-list.
type AllowList []Rule

// Allows reports whether any rule lets the sandbox reach host:port.
func (l AllowList) Allows(host string, port int) bool {
	for _, r := range l {
		if r.Allows(host, port) {
			return true
		}
	}
	return false
}

// Merge builds a task's allow-list: the operator's rules, plus the
// repository's where a ceiling rule covers them. refused lists the
// repository's rules no ceiling rule covers, so the task can say what it
// did not grant instead of failing it. A repository's "*" is granted only
// by a ceiling of "*".
func Merge(operator, ceiling, repository []Rule) (allow AllowList, refused []Rule) {
	allow = append(allow, operator...)
	for _, r := range repository {
		granted := false
		for _, c := range ceiling {
			if c.covers(r) {
				granted = true
				break
			}
		}
		if granted {
			allow = append(allow, r)
		} else {
			refused = append(refused, r)
		}
	}
	return allow, refused
}
