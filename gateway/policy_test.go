package gateway

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseRules(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Rule
		wantErr string
	}{
		{name: "bare hosts are https", in: "registry.npmjs.org, Proxy.Golang.org.", want: []Rule{{"registry.npmjs.org", 443}, {"proxy.golang.org", 443}}},
		{name: "ports and any port", in: "a.example:8080 *.example.com:*", want: []Rule{{"a.example", 8080}, {"*.example.com", 0}}},
		{name: "an address is not a name", in: "169.254.169.254", wantErr: "not a host name"},
		{name: "a wildcard in the middle", in: "a.*.example.com", wantErr: "not a host name"},
		{name: "a bad port", in: "a.example:0", wantErr: "port"},
		{name: "an empty list", in: " , ", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRules(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseRules(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestAllowList(t *testing.T) {
	l := AllowList{rule(t, "*.example.com"), rule(t, "api.anthropic.com"), rule(t, "ci.example:*")}
	tests := []struct {
		host string
		port int
		want bool
	}{
		{"a.example.com", 443, true},
		{"a.b.example.com", 443, true},
		{"example.com", 443, false},
		{"evilexample.com", 443, false},
		{"a.example.com", 80, false},
		{"API.Anthropic.com.", 443, true},
		{"ci.example", 9000, true},
	}
	for _, tc := range tests {
		if got := l.Allows(tc.host, tc.port); got != tc.want {
			t.Errorf("Allows(%s:%d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
}

func TestMergeKeepsRepositoriesUnderTheCeiling(t *testing.T) {
	operator := []Rule{rule(t, "api.anthropic.com")}
	tests := []struct {
		name        string
		ceiling     string
		repo        string
		wantAllow   string
		wantRefused string
	}{
		{name: "the default ceiling grants additions", ceiling: "*:*", repo: "registry.npmjs.org *.pypi.org", wantAllow: "api.anthropic.com:443 registry.npmjs.org:443 *.pypi.org:443"},
		{name: "a domain ceiling", ceiling: "*.npmjs.org", repo: "registry.npmjs.org *.npmjs.org evil.example *", wantAllow: "api.anthropic.com:443 registry.npmjs.org:443 *.npmjs.org:443", wantRefused: "evil.example:443 *:443"},
		{name: "a port ceiling", ceiling: "*:443", repo: "a.example:22", wantAllow: "api.anthropic.com:443", wantRefused: "a.example:22"},
		{name: "no ceiling grants nothing", ceiling: "", repo: "a.example", wantAllow: "api.anthropic.com:443", wantRefused: "a.example:443"},
	}
	join := func(rs []Rule) string {
		var s []string
		for _, r := range rs {
			s = append(s, r.String())
		}
		return strings.Join(s, " ")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ceiling, err := ParseRules(tc.ceiling)
			if err != nil {
				t.Fatal(err)
			}
			repo, err := ParseRules(tc.repo)
			if err != nil {
				t.Fatal(err)
			}
			allow, refused := Merge(operator, ceiling, repo)
			if join(allow) != tc.wantAllow || join(refused) != tc.wantRefused {
				t.Errorf("allow %q refused %q; want %q and %q", join(allow), join(refused), tc.wantAllow, tc.wantRefused)
			}
		})
	}
}

func TestAddressChecks(t *testing.T) {
	p := addrPolicy{allowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
		self: []netip.AddrPort{netip.MustParseAddrPort("10.9.0.5:8080"), netip.MustParseAddrPort("203.0.113.7:0")}}
	tests := []struct {
		addr string
		ok   bool
	}{
		{"93.184.216.34:443", true},
		{"127.0.0.1:443", false},
		{"[::1]:443", false},
		{"169.254.169.254:80", false},
		{"[fe80::1]:443", false},
		{"[fd00::1]:443", false},
		{"192.168.1.1:443", false},
		{"172.16.0.1:443", false},
		{"100.64.0.1:443", false},
		{"0.0.0.0:443", false},
		{"[::ffff:127.0.0.1]:443", false},
		{"[::ffff:169.254.169.254]:80", false},
		{"10.9.1.1:443", true},    // inside the operator's range
		{"10.9.0.5:8080", false},  // agentbot's own listener, inside it
		{"10.9.0.5:8081", true},   // another service in the range
		{"203.0.113.7:22", false}, // the host's own public address
		{"10.10.0.1:443", false},
	}
	for _, tc := range tests {
		err := p.check(netip.MustParseAddrPort(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("check(%s) = %v, want allowed %v", tc.addr, err, tc.ok)
		}
	}
}

// TestRebindingAnswerIsRefusedWhole: a name with one public and one
// internal address is refused, whatever the order.
func TestRebindingAnswerIsRefusedWhole(t *testing.T) {
	r := multiHosts{"mixed.test": {"93.184.216.34", "127.0.0.1"}}
	if _, err := (addrPolicy{}).resolve(context.Background(), r, "mixed.test", 443); err == nil {
		t.Fatal("a name resolving to a public and a loopback address was allowed")
	}
}

type multiHosts map[string][]string

func (h multiHosts) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range h[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func TestBudgetIsLoweredOnly(t *testing.T) {
	tests := []struct {
		name           string
		operator, repo float64
		want           float64
	}{
		{"the operator's", 5, 0, 5},
		{"the repository lowers it", 5, 2, 2},
		{"the repository cannot raise it", 5, 9, 5},
		{"only the repository's", 0, 2, 2},
		{"none", 0, 0, 0},
		{"a negative repository figure is none", 0, -1, 0},
	}
	for _, tc := range tests {
		if got := (ModelOptions{MaxCostUSD: tc.operator}).budget(tc.repo); got != tc.want {
			t.Errorf("%s: budget = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPrices(t *testing.T) {
	p, err := ParsePrices(`{"claude-sonnet-4-5*": {"input": 1, "output": 2}}`, DefaultPrices)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model string
		want  Price
	}{
		{"claude-sonnet-4-5-20250929", Price{Input: 1, Output: 2}},
		{"claude-sonnet-4-0", DefaultPrices["claude-sonnet-4*"]},
		{"claude-opus-4-5", DefaultPrices["claude-opus-4-5*"]},
		{"some-new-model", DefaultPrices["*"]},
	}
	for _, tc := range tests {
		if got := p.For(tc.model); got != tc.want {
			t.Errorf("For(%s) = %+v, want %+v", tc.model, got, tc.want)
		}
	}
	if _, err := ParsePrices(`{"x": {"input": -1}}`, nil); err == nil {
		t.Error("a negative price was accepted")
	}
	if _, err := ParsePrices(`{"x": {"inptu": 1}}`, nil); err == nil {
		t.Error("a misspelt field was accepted")
	}
}
