package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
)

// Runsc runs one task's sandbox under gVisor. The flags are the ones that
// work on a machine like agentbot's test VMs (root, cgroup v1, nested
// virtualisation without a usable /dev/kvm): the ptrace platform, no
// cgroup setup by runsc (agentbot puts runsc in the task's cgroup itself)
// and no network but the sandbox's loopback: the egress gateway's unix
// socket, bound in through the bundle, is its way out, which runsc lets the
// sandbox connect to with --host-uds=open (open only: the sandbox cannot
// create host sockets, and sees only the sockets its mounts show).
type Runsc struct {
	Path     string // runsc binary
	StateDir string // runsc --root: container state, one per agentbot
	Platform string // "" means ptrace
	Network  string // "" means none
}

var containerIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ContainerID is the runsc container of a task.
func ContainerID(taskID string) (string, error) {
	id := "agentbot-" + taskID
	if !containerIDPattern.MatchString(id) || strings.Contains(id, "..") {
		return "", fmt.Errorf("sandbox: task id %q cannot name a container", taskID)
	}
	return id, nil
}

func (r Runsc) global() []string {
	platform, network := r.Platform, r.Network
	if platform == "" {
		platform = "ptrace"
	}
	if network == "" {
		network = "none"
	}
	return []string{"--root", r.StateDir, "--ignore-cgroups", "--platform=" + platform, "--network=" + network, "--host-uds=open"}
}

// Command returns `runsc run` of the bundle (written by WriteOCIBundle) as
// container id; its standard streams are the container's. It runs in its
// own session and dies with its parent.
func (r Runsc) Command(bundle, id string) *exec.Cmd {
	args := append(r.global(), "run", "--bundle", bundle, id)
	cmd := exec.Command(r.Path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Remove kills what is left of container id and deletes its state. A
// container that does not exist (any more) is not an error.
func (r Runsc) Remove(ctx context.Context, id string) error {
	kill := exec.CommandContext(ctx, r.Path, append(r.global(), "kill", "--all", id, "KILL")...)
	_, _ = kill.CombinedOutput() // fails when it has already stopped; delete says the rest
	del := exec.CommandContext(ctx, r.Path, append(r.global(), "delete", "--force", id)...)
	out, err := del.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		return fmt.Errorf("sandbox: runsc delete %s: %w: %s", id, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Probe reports why runsc cannot run sandboxes here, or nil: it runs
// `true` in a throw-away container with the same flags.
func (r Runsc) Probe(ctx context.Context) error {
	if r.Path == "" {
		return errors.New("runsc is not installed (Debian package runsc)")
	}
	out, err := exec.CommandContext(ctx, r.Path, append(r.global(), "do", "true")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runsc fails here: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
