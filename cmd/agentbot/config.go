package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentbot/agentbot/webhook"
)

// Options are the settings as given, by flag or environment variable (a flag
// wins). Validate checks them all and turns them into a Config.
type Options struct {
	Listen            string
	MetricsListen     string
	DataDir           string
	AppID             string
	PrivateKeyFile    string
	WebhookSecretFile string
	GitHubURL         string
	LogLevel          string
	TriggerLabels     string
	MaxBody           string
	DeliveryRetention string
	ShutdownTimeout   string
	StoreTimeout      string
}

// setting ties one field of an options struct T to its flag, its
// environment variable ("" = flag only) and its default, as text. field
// returns a *string, *bool or *time.Duration. Every command binds its
// flags and environment through bind, so a flag always wins over its
// variable, which wins over the default.
type setting[T any] struct {
	flag, env, def, usage string
	field                 func(*T) any
}

// bind registers settings on fs (those named, when names are given). A
// set environment variable replaces the default; one that does not parse
// is a problem, said like a bad flag.
func bind[T any](fs *flag.FlagSet, getenv func(string) string, o *T, settings []setting[T], names ...string) error {
	var errs []error
	for _, s := range settings {
		if len(names) > 0 && !slices.Contains(names, s.flag) {
			continue
		}
		def, usage := s.def, s.usage
		if s.env != "" {
			usage = fmt.Sprintf("%s ($%s)", s.usage, s.env)
			if v := getenv(s.env); v != "" {
				def = v
			}
		}
		var err error
		switch p := s.field(o).(type) {
		case *string:
			fs.StringVar(p, s.flag, def, usage)
		case *bool:
			var v bool
			v, err = strconv.ParseBool(def)
			fs.BoolVar(p, s.flag, v, usage)
		case *int:
			var v int
			v, err = strconv.Atoi(def)
			fs.IntVar(p, s.flag, v, usage)
		case *time.Duration:
			var v time.Duration
			v, err = time.ParseDuration(def)
			fs.DurationVar(p, s.flag, v, usage)
		default:
			panic(fmt.Sprintf("setting --%s: unsupported field type %T", s.flag, p))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s ($%s): %q: %w", s.flag, s.env, def, err))
		}
	}
	return errors.Join(errs...)
}

// settings lists every setting; subcommands pick theirs by flag name.
var settings = []setting[Options]{
	{"listen", "AGENTBOT_LISTEN", ":8080", "address to serve HTTP on", func(o *Options) any { return &o.Listen }},
	{"metrics-listen", "AGENTBOT_METRICS_LISTEN", "", "address to serve /metrics on, without auth (say 127.0.0.1:9090); unset: /metrics is on --listen, behind the pages' auth", func(o *Options) any { return &o.MetricsListen }},
	{"data-dir", "AGENTBOT_DATA_DIR", "./data", "directory of the bbolt state file", func(o *Options) any { return &o.DataDir }},
	{"app-id", "AGENTBOT_APP_ID", "", "GitHub App id", func(o *Options) any { return &o.AppID }},
	{"private-key-file", "AGENTBOT_PRIVATE_KEY_FILE", "", "file holding the GitHub App's RSA private key (PEM)", func(o *Options) any { return &o.PrivateKeyFile }},
	{"webhook-secret-file", "AGENTBOT_WEBHOOK_SECRET_FILE", "", "file holding the webhook secret (required)", func(o *Options) any { return &o.WebhookSecretFile }},
	{"github-url", "AGENTBOT_GITHUB_URL", "https://api.github.com/", "GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3/)", func(o *Options) any { return &o.GitHubURL }},
	{"log-level", "AGENTBOT_LOG_LEVEL", "info", "debug, info, warn or error", func(o *Options) any { return &o.LogLevel }},
	{"trigger-labels", "AGENTBOT_TRIGGER_LABELS", webhook.DefaultTriggerLabel, "comma-separated labels whose issues.labeled event creates a task (* = any label; the repository's trigger_label then decides)", func(o *Options) any { return &o.TriggerLabels }},
	{"max-body", "AGENTBOT_MAX_BODY", strconv.FormatInt(webhook.DefaultMaxBody, 10), "largest webhook body accepted, in bytes", func(o *Options) any { return &o.MaxBody }},
	{"delivery-retention", "AGENTBOT_DELIVERY_RETENTION", "168h", "how long delivery IDs are kept to refuse redeliveries", func(o *Options) any { return &o.DeliveryRetention }},
	{"shutdown-timeout", "AGENTBOT_SHUTDOWN_TIMEOUT", "30s", "how long shutdown waits for in-flight requests", func(o *Options) any { return &o.ShutdownTimeout }},
	{"store-timeout", "AGENTBOT_STORE_TIMEOUT", "1s", "how long to wait for the state file's lock before failing", func(o *Options) any { return &o.StoreTimeout }},
}

// Config is the validated configuration. WebhookSecret and PrivateKey are
// secrets: Config is never logged whole (see LogValue).
type Config struct {
	Listen            string
	MetricsListen     string
	DataDir           string
	AppID             int64
	PrivateKeyFile    string
	PrivateKey        *rsa.PrivateKey
	WebhookSecret     []byte
	GitHubURL         *url.URL
	LogLevel          slog.Level
	TriggerLabels     []string
	MaxBody           int64
	DeliveryRetention time.Duration
	ShutdownTimeout   time.Duration
	StoreTimeout      time.Duration
}

// LogValue names what is configured without any secret.
func (c Config) LogValue() slog.Value {
	gh := ""
	if c.GitHubURL != nil {
		gh = c.GitHubURL.String()
	}
	return slog.GroupValue(
		slog.String("listen", c.Listen),
		slog.String("metrics_listen", c.MetricsListen),
		slog.String("data_dir", c.DataDir),
		slog.Int64("app_id", c.AppID),
		slog.String("github_url", gh),
		slog.String("log_level", c.LogLevel.String()),
		slog.Any("trigger_labels", c.TriggerLabels),
	)
}

// problems collects one line per bad setting.
type problems []error

func (p *problems) add(s setting[Options], format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s ($%s): %s", "--"+s.flag, s.env, fmt.Sprintf(format, args...)))
}

func lookup(flagName string) setting[Options] {
	for _, s := range settings {
		if s.flag == flagName {
			return s
		}
	}
	panic("unknown setting " + flagName)
}

// Validate checks the settings serve needs (secrets read from their files)
// and returns every problem, one line each.
func (o Options) Validate() (Config, error) {
	var c Config
	var p problems
	o.validateListen(&c, &p)
	o.validateApp(&c, &p)
	o.validateIntake(&c, &p)
	return c, errors.Join(p...)
}

// validateListen checks where agentbot listens and keeps its data.
func (o Options) validateListen(c *Config, p *problems) {
	c.Listen = o.Listen
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		p.add(lookup("listen"), "%q is not host:port", o.Listen)
	}
	c.MetricsListen = o.MetricsListen
	if o.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(o.MetricsListen); err != nil {
			p.add(lookup("metrics-listen"), "%q is not host:port", o.MetricsListen)
		} else if o.MetricsListen == o.Listen && port != "0" {
			p.add(lookup("metrics-listen"), "%q is --listen's address too; give /metrics its own port", o.MetricsListen)
		}
	}
	c.DataDir = o.DataDir
	if o.DataDir == "" {
		p.add(lookup("data-dir"), "empty")
	} else if fi, err := os.Stat(o.DataDir); err == nil && !fi.IsDir() {
		p.add(lookup("data-dir"), "%s is not a directory", o.DataDir)
	}
	if err := c.LogLevel.UnmarshalText([]byte(o.LogLevel)); err != nil {
		p.add(lookup("log-level"), "%q is not debug, info, warn or error", o.LogLevel)
	}
}

// validateApp checks the GitHub App's identity, key, webhook secret and API.
func (o Options) validateApp(c *Config, p *problems) {
	if o.AppID != "" {
		id, err := strconv.ParseInt(o.AppID, 10, 64)
		if err != nil || id <= 0 {
			p.add(lookup("app-id"), "%q is not a positive number", o.AppID)
		}
		c.AppID = id
	}
	c.PrivateKeyFile = o.PrivateKeyFile
	if o.PrivateKeyFile != "" {
		key, err := readPrivateKey(o.PrivateKeyFile)
		if err != nil {
			p.add(lookup("private-key-file"), "%v", err)
		}
		c.PrivateKey = key
	}
	switch {
	case o.AppID != "" && o.PrivateKeyFile == "":
		p.add(lookup("private-key-file"), "required when the App id is set")
	case o.AppID == "" && o.PrivateKeyFile != "":
		p.add(lookup("app-id"), "required when a private key file is set")
	}
	switch secret, err := readSecret(o.WebhookSecretFile); {
	case o.WebhookSecretFile == "":
		p.add(lookup("webhook-secret-file"), "required: a file holding the webhook secret")
	case err != nil:
		p.add(lookup("webhook-secret-file"), "%v", err)
	case len(secret) == 0:
		p.add(lookup("webhook-secret-file"), "%s is empty: an empty secret would accept unsigned deliveries", o.WebhookSecretFile)
	default:
		c.WebhookSecret = secret
	}
	if u, err := url.Parse(o.GitHubURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add(lookup("github-url"), "%q is not an http(s) URL", o.GitHubURL)
	} else {
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		c.GitHubURL = u
	}
}

// validateIntake checks what shapes intake and the store.
func (o Options) validateIntake(c *Config, p *problems) {
	for _, l := range strings.Split(o.TriggerLabels, ",") {
		if l = strings.TrimSpace(l); l != "" {
			c.TriggerLabels = append(c.TriggerLabels, l)
		}
	}
	if len(c.TriggerLabels) == 0 {
		p.add(lookup("trigger-labels"), "no label given")
	}
	if n, err := strconv.ParseInt(o.MaxBody, 10, 64); err != nil || n < 1024 {
		p.add(lookup("max-body"), "%q is not a byte count of at least 1024", o.MaxBody)
	} else {
		c.MaxBody = n
	}
	durations := []struct {
		name string
		raw  string
		dst  *time.Duration
	}{
		{"delivery-retention", o.DeliveryRetention, &c.DeliveryRetention},
		{"shutdown-timeout", o.ShutdownTimeout, &c.ShutdownTimeout},
		{"store-timeout", o.StoreTimeout, &c.StoreTimeout},
	}
	for _, d := range durations {
		v, err := time.ParseDuration(d.raw)
		if err != nil || v <= 0 {
			p.add(lookup(d.name), "%q is not a positive duration (like 30s or 168h)", d.raw)
			continue
		}
		*d.dst = v
	}
}

// readSecret reads a secret file, dropping one trailing newline (as left by
// echo or an editor). Errors never quote the file's content.
func readSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, describeFileError(path, err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return b, nil
}

// readPrivateKey reads a GitHub App private key: PEM, PKCS#1 ("RSA PRIVATE
// KEY", what GitHub hands out) or PKCS#8 holding an RSA key.
func readPrivateKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, describeFileError(path, err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s is not a PEM file", path)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: not a valid RSA private key", path)
		}
		return key, nil
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: not a valid PKCS#8 private key", path)
		}
		rsaKey, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: holds a %T, not an RSA key", path, key)
		}
		return rsaKey, nil
	}
	return nil, fmt.Errorf("%s: PEM block %q is not an RSA private key", path, block.Type)
}

func describeFileError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s is not readable", path)
	}
	return fmt.Errorf("read %s: %w", path, err)
}
