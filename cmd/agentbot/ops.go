package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentbot/agentbot/redeliver"
	"github.com/agentbot/agentbot/webhook"
)

// OpsOptions are serve's settings for keeping itself healthy: missed
// delivery recovery and retention.
type OpsOptions struct {
	RedeliverWindow   string
	RedeliverInterval string
	Retention         string

	redeliverWindow   time.Duration
	redeliverInterval time.Duration
	retention         time.Duration
}

var opsSettings = []setting[OpsOptions]{
	{"redeliver-window", "AGENTBOT_REDELIVER_WINDOW", "24h", "how far back GitHub's delivery log is read for deliveries agentbot missed (0: no recovery; below --delivery-retention)", func(o *OpsOptions) any { return &o.RedeliverWindow }},
	{"redeliver-interval", "AGENTBOT_REDELIVER_INTERVAL", "5m", "time between two reads of the delivery log", func(o *OpsOptions) any { return &o.RedeliverInterval }},
	{"retention", "AGENTBOT_RETENTION", "90d", "how long finished tasks, their logs and workspaces are kept (0: forever)", func(o *OpsOptions) any { return &o.Retention }},
}

func opsProblem(name, format string, args ...any) error {
	for _, s := range opsSettings {
		if s.flag == name {
			return fmt.Errorf("--%s ($%s): %s", s.flag, s.env, fmt.Sprintf(format, args...))
		}
	}
	return fmt.Errorf("--%s: %s", name, fmt.Sprintf(format, args...))
}

// parseDays is time.ParseDuration that also takes whole days ("90d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func (o *OpsOptions) validate(cfg Config) error {
	var errs []error
	var err error
	if o.redeliverWindow, err = parseDays(o.RedeliverWindow); err != nil || o.redeliverWindow < 0 {
		errs = append(errs, opsProblem("redeliver-window", "%q is not a duration", o.RedeliverWindow))
	} else if cfg.DeliveryRetention > 0 && o.redeliverWindow >= cfg.DeliveryRetention {
		// A delivery whose id was pruned would look missed and be replayed.
		errs = append(errs, opsProblem("redeliver-window", "%s must be shorter than --delivery-retention (%s)", o.redeliverWindow, cfg.DeliveryRetention))
	}
	if o.redeliverInterval, err = parseDays(o.RedeliverInterval); err != nil || o.redeliverInterval < time.Minute {
		errs = append(errs, opsProblem("redeliver-interval", "%q is not a duration of a minute or more", o.RedeliverInterval))
	}
	if o.retention, err = parseDays(o.Retention); err != nil || o.retention < 0 {
		errs = append(errs, opsProblem("retention", "%q is not a duration (90d, 2160h; 0 keeps tasks forever)", o.Retention))
	} else if o.retention > 0 && o.retention < time.Hour {
		errs = append(errs, opsProblem("retention", "%s is under an hour: a task would be pruned while someone reads it", o.retention))
	}
	return errors.Join(errs...)
}

// redeliverHook recovers missed deliveries: with App credentials and a
// window, it reads GitHub's delivery log at start and every interval and
// asks for what agentbot missed.
func redeliverHook(_ context.Context, m *Main) (Plugin, error) {
	if m.Config.AppID == 0 || m.Config.PrivateKey == nil || m.Ops.redeliverWindow == 0 {
		return Plugin{}, nil
	}
	gh, err := m.gitHub()
	if err != nil {
		return Plugin{}, err
	}
	rc, err := redeliver.New(redeliver.Options{
		GitHub: gh, Store: m.Store, Handles: webhook.Handles,
		Window: m.Ops.redeliverWindow, Interval: m.Ops.redeliverInterval,
		Registry: m.Registry, Logger: m.Logger,
	})
	if err != nil {
		return Plugin{}, err
	}
	return Plugin{Background: rc.Run, Stop: func(context.Context) error { gh.Close(); return nil }}, nil
}
