package main

import (
	"path/filepath"

	"github.com/agentbot/agentbot/mirror"
	"github.com/agentbot/agentbot/runner/sandbox"
)

// validateMirror checks the repository mirror's settings. The Kubernetes
// launcher's pods cannot see the bot's disk: they clone plainly, and the
// mirror serves the bot's push verification only.
func (o DispatchOptions) validateMirror(c *DispatchConfig, add func(error)) {
	c.MirrorPushOnly = o.Launcher == "kubernetes"
	switch o.Mirror {
	case "on", "true", "1", "":
		c.Mirror = true
	case "off", "false", "0":
	default:
		add(dispatchProblem("mirror", "%q is not on or off", o.Mirror))
	}
	if o.MirrorDir != "" && !filepath.IsAbs(o.MirrorDir) {
		if abs, err := filepath.Abs(o.MirrorDir); err == nil {
			o.MirrorDir = abs
		}
	}
	c.MirrorDir = o.MirrorDir
	n, err := sandbox.ParseSize(o.MirrorMax)
	switch {
	case o.MirrorMax == "":
		c.MirrorMax = mirror.DefaultMaxBytes
	case err != nil || n <= 0:
		add(dispatchProblem("mirror-max", "%q is not a positive size (20GiB, 500MiB)", o.MirrorMax))
	default:
		c.MirrorMax = n
	}
}

// newMirrors opens the repository mirrors, nil when they are off.
func newMirrors(dataDir string, c DispatchConfig) (*mirror.Manager, error) {
	if !c.Mirror {
		return nil, nil
	}
	dir := c.MirrorDir
	if dir == "" {
		abs, err := filepath.Abs(filepath.Join(dataDir, "mirrors"))
		if err != nil {
			return nil, err
		}
		dir = abs
	}
	return mirror.New(mirror.Options{Dir: dir, MaxBytes: c.MirrorMax, GID: c.SandboxUID})
}
