package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// The subset of the OCI runtime specification (config.json, version
// 1.0.2) the plan needs. Hand-written: a handful of structs do not justify
// the opencontainers module.
type ociSpec struct {
	Version  string     `json:"ociVersion"`
	Process  ociProcess `json:"process"`
	Root     ociRoot    `json:"root"`
	Hostname string     `json:"hostname"`
	Mounts   []ociMount `json:"mounts"`
	Linux    ociLinux   `json:"linux"`
}

type ociProcess struct {
	Terminal        bool        `json:"terminal"`
	User            ociUser     `json:"user"`
	Args            []string    `json:"args"`
	Env             []string    `json:"env"`
	Cwd             string      `json:"cwd"`
	Capabilities    ociCaps     `json:"capabilities"`
	Rlimits         []ociRlimit `json:"rlimits,omitempty"`
	NoNewPrivileges bool        `json:"noNewPrivileges"`
}

type ociUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type ociCaps struct {
	Bounding    []string `json:"bounding"`
	Effective   []string `json:"effective"`
	Inheritable []string `json:"inheritable"`
	Permitted   []string `json:"permitted"`
	Ambient     []string `json:"ambient"`
}

type ociRlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type ociRoot struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type ociMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

type ociLinux struct {
	Namespaces []ociNamespace `json:"namespaces"`
	Resources  *ociResources  `json:"resources,omitempty"`
}

type ociNamespace struct {
	Type string `json:"type"`
}

type ociResources struct {
	Memory *ociMemory `json:"memory,omitempty"`
	Pids   *ociPids   `json:"pids,omitempty"`
}

type ociMemory struct {
	Limit int64 `json:"limit"`
}

type ociPids struct {
	Limit int64 `json:"limit"`
}

// WriteOCIBundle writes an OCI bundle for the plan into dir (which must be
// empty or absent): config.json running argv with env, a read-only root
// holding only the mount points and links the plan needs, and the
// generated files. The container has no capabilities and, unless the plan
// shares it, no network.
//
// gVisor shows the host's file owners as they are, without a user
// namespace, so the sandbox user is the plan's host uid there (the
// workspace belongs to it) and passwd and group name that uid "agent".
// With p.RunnerRoot the container's process (agent-runner) is the guest's
// root with RunnerCapabilities instead, and starts the agent as that uid
// (AgentInitCommand).
func (p *Plan) WriteOCIBundle(dir string, argv, env []string) error {
	rootfs := filepath.Join(dir, "rootfs")
	files := filepath.Join(dir, "files")
	for _, d := range []string{rootfs, files} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("sandbox: bundle: %w", err)
		}
	}
	if env == nil {
		env = p.Env()
	}
	spec := ociSpec{
		Version:  "1.0.2",
		Hostname: "agentbot-sandbox",
		Root:     ociRoot{Path: rootfs, Readonly: true},
		Process: ociProcess{
			User: ociUser{UID: uint32(p.HostUID), GID: uint32(p.HostGID)},
			Args: argv, Env: env, Cwd: p.Workdir,
			Capabilities:    ociCaps{Bounding: []string{}, Effective: []string{}, Inheritable: []string{}, Permitted: []string{}, Ambient: []string{}},
			NoNewPrivileges: true,
			Rlimits:         []ociRlimit{{Type: "RLIMIT_NOFILE", Hard: 65536, Soft: 65536}},
		},
		Linux: ociLinux{Namespaces: []ociNamespace{{"pid"}, {"ipc"}, {"uts"}, {"mount"}, {"network"}}},
	}
	if p.Limits.Memory > 0 || p.Limits.PIDs > 0 {
		spec.Linux.Resources = &ociResources{}
		if p.Limits.Memory > 0 {
			spec.Linux.Resources.Memory = &ociMemory{Limit: p.Limits.Memory}
		}
		if p.Limits.PIDs > 0 {
			spec.Linux.Resources.Pids = &ociPids{Limit: p.Limits.PIDs}
		}
	}
	for i, m := range p.Mounts {
		om, err := p.ociMount(m, rootfs, filepath.Join(files, strconv.Itoa(i)))
		if err != nil {
			return err
		}
		if om != nil {
			spec.Mounts = append(spec.Mounts, *om)
		}
	}
	if p.RunnerRoot {
		// The guest's root, not the host's: no user namespace, but the
		// Sentry holds no host capability for it, and what it may touch
		// is what the mounts show. no_new_privs stays: setuid(2) still
		// works with CAP_SETUID, only setuid binaries stop.
		spec.Process.User = ociUser{}
		caps := append([]string(nil), RunnerCapabilities...)
		spec.Process.Capabilities = ociCaps{Bounding: caps, Effective: caps, Permitted: caps, Inheritable: []string{}, Ambient: []string{}}
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("sandbox: bundle: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("sandbox: bundle: %w", err)
	}
	return nil
}

// ociMount turns one plan entry into a container mount, preparing its
// mount point (or link) in the read-only root.
func (p *Plan) ociMount(m Mount, rootfs, file string) (*ociMount, error) {
	at := filepath.Join(rootfs, m.Target)
	mkdir := func(path string) error {
		if err := os.MkdirAll(path, 0o755); err != nil {
			return fmt.Errorf("sandbox: bundle: %w", err)
		}
		return nil
	}
	point := func(source string) error {
		fi, err := os.Stat(source)
		if err != nil {
			return fmt.Errorf("sandbox: bundle: %w", err)
		}
		if fi.IsDir() {
			return mkdir(at)
		}
		if err := mkdir(filepath.Dir(at)); err != nil {
			return err
		}
		return os.WriteFile(at, nil, 0o644)
	}
	switch m.Kind {
	case Symlink:
		if err := mkdir(filepath.Dir(at)); err != nil {
			return nil, err
		}
		if err := os.Symlink(m.Source, at); err != nil {
			return nil, fmt.Errorf("sandbox: bundle: %w", err)
		}
		return nil, nil
	case ROBind, Bind:
		if err := point(m.Source); err != nil {
			return nil, err
		}
		opts := []string{"rbind", "nosuid", "nodev", "ro"}
		if m.Kind == Bind {
			opts[3] = "rw"
		}
		return &ociMount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opts}, nil
	case File:
		data := m.Data
		switch m.Target {
		case "/etc/passwd":
			data = []byte(passwd(p.HostUID, p.HostGID, p.Home))
		case "/etc/group":
			data = []byte(group(p.HostGID))
		}
		if err := os.WriteFile(file, data, 0o444); err != nil {
			return nil, fmt.Errorf("sandbox: bundle: %w", err)
		}
		if err := point(file); err != nil {
			return nil, err
		}
		return &ociMount{Destination: m.Target, Type: "bind", Source: file, Options: []string{"rbind", "ro"}}, nil
	case Tmpfs:
		if err := mkdir(at); err != nil {
			return nil, err
		}
		return &ociMount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(m.Size, 10)}}, nil
	case Proc:
		if err := mkdir(at); err != nil {
			return nil, err
		}
		return &ociMount{Destination: m.Target, Type: "proc", Source: "proc"}, nil
	case Dev:
		if err := mkdir(at); err != nil {
			return nil, err
		}
		return &ociMount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}}, nil
	}
	return nil, fmt.Errorf("sandbox: mount kind %d of %s is unknown", m.Kind, m.Target)
}
