// Command scriptedagent is a deterministic stand-in for a coding agent, run by
// agent-runner's "command" adapter in tests. It reads a small script of
// actions and carries them out in its working directory (the cloned
// repository). See package github.com/agentbot/agentbot/internal/scriptedagent
// for the action language and the helpers that build this program.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// directive starts a line of the prompt that holds actions.
const directive = "scripted:"

func main() {
	prompt, err := readPrompt()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scriptedagent: read prompt: %v\n", err)
		os.Exit(70)
	}
	var actions []string
	actions = append(actions, splitActions(strings.Join(os.Args[1:], " "))...)
	actions = append(actions, splitActions(os.Getenv("SCRIPTED_AGENT"))...)
	for _, line := range strings.Split(prompt, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, directive); ok {
			actions = append(actions, splitActions(rest)...)
		}
	}
	for _, a := range actions {
		if err := do(a, prompt); err != nil {
			fmt.Fprintf(os.Stderr, "scriptedagent: %s: %v\n", a, err)
			os.Exit(70)
		}
	}
}

// readPrompt reads $AGENTBOT_PROMPT_FILE when set, else standard input.
func readPrompt() (string, error) {
	if p := os.Getenv("AGENTBOT_PROMPT_FILE"); p != "" {
		b, err := os.ReadFile(p)
		return string(b), err
	}
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		return "", nil
	}
	b, err := io.ReadAll(os.Stdin)
	return string(b), err
}

func splitActions(s string) []string {
	var out []string
	for _, a := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == '\n' }) {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// text turns the rest of an action into file or stream content: `\n` becomes
// a newline and a final newline is added.
func text(words []string) string {
	return strings.ReplaceAll(strings.Join(words, " "), `\n`, "\n") + "\n"
}

// actions are the scripted agent's verbs; each gets the verb, its
// arguments, the prompt and a check of the argument count.
var actions = map[string]func(verb string, args []string, prompt string, need func(int) error) error{
	"write":         actWrite,
	"append":        actWrite,
	"delete":        actDelete,
	"delete-tree":   actDelete,
	"stdout":        actStdout,
	"stderr":        actStderr,
	"stdout-env":    actStdoutEnv,
	"summary":       actSummary,
	"sleep":         actSleep,
	"wait-for":      actWaitFor,
	"spawn-sleeper": actSpawnSleeper,
	"fail":          actFail,
	"commit":        actCommit,
	"git":           actGit,
	"dump-env":      actDumpEnv,
	"copy-prompt":   actCopyPrompt,
	"stdout-lines":  actStdoutLines,
}

func do(action, prompt string) error {
	f := strings.Fields(action)
	verb, args := f[0], f[1:]
	need := func(n int) error {
		if len(args) < n {
			return fmt.Errorf("%s needs %d arguments", verb, n)
		}
		return nil
	}
	act, ok := actions[verb]
	if !ok {
		return fmt.Errorf("unknown action %q", verb)
	}
	return act(verb, args, prompt, need)
}

func actWrite(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(args[0]), 0o755); err != nil {
		return err
	}
	flag := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if verb == "append" {
		flag = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	fh, err := os.OpenFile(args[0], flag, 0o644)
	if err != nil {
		return err
	}
	if _, err := fh.WriteString(text(args[1:])); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func actDelete(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	if verb == "delete-tree" {
		return os.RemoveAll(args[0])
	}
	return os.Remove(args[0])
}

func actStdout(verb string, args []string, prompt string, need func(int) error) error {
	_, err := fmt.Fprint(os.Stdout, text(args))
	return err
}

func actStderr(verb string, args []string, prompt string, need func(int) error) error {
	_, err := fmt.Fprint(os.Stderr, text(args))
	return err
}

func actStdoutEnv(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	_, err := fmt.Fprintf(os.Stdout, "%s=%s\n", args[0], os.Getenv(args[0]))
	return err
}

func actSummary(verb string, args []string, prompt string, need func(int) error) error {
	p := os.Getenv("AGENTBOT_SUMMARY_FILE")
	if p == "" {
		return fmt.Errorf("AGENTBOT_SUMMARY_FILE is not set")
	}
	return os.WriteFile(p, []byte(text(args)), 0o644)
}

func actSleep(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	secs, err := strconv.ParseFloat(args[0], 64)
	if err != nil {
		return err
	}
	time.Sleep(time.Duration(secs * float64(time.Second)))
	return nil
}

func actWaitFor(verb string, args []string, prompt string, need func(int) error) error {
	// Blocks until a file the test creates exists, so a test can hold
	// the agent in its phase as long as it needs, on any machine.
	if err := need(1); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(args[0]); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait-for %s: gave up after 2 minutes", args[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func actSpawnSleeper(verb string, args []string, prompt string, need func(int) error) error {
	// A child in the same process group that outlives nothing on its
	// own: it sleeps until killed, so tests can check group kills.
	if err := need(2); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "sleep", args[1])
	cmd.Env = append(os.Environ(), "SCRIPTED_AGENT=", "AGENTBOT_PROMPT_FILE=/dev/null")
	if err := cmd.Start(); err != nil {
		return err
	}
	return os.WriteFile(args[0], []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

func actFail(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	code, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, text(args[1:]))
	os.Exit(code)
	return nil
}

func actCommit(verb string, args []string, prompt string, need func(int) error) error {
	if err := git("add", "-A"); err != nil {
		return err
	}
	return git("commit", "-q", "-m", strings.Join(args, " "))
}

func actGit(verb string, args []string, prompt string, need func(int) error) error {
	return git(args...)
}

func actDumpEnv(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	env := os.Environ()
	sort.Strings(env)
	return os.WriteFile(args[0], []byte(strings.Join(env, "\n")+"\n"), 0o644)
}

func actCopyPrompt(verb string, args []string, prompt string, need func(int) error) error {
	if err := need(1); err != nil {
		return err
	}
	return os.WriteFile(args[0], []byte(prompt), 0o644)
}

func actStdoutLines(verb string, args []string, prompt string, need func(int) error) error {
	// Many numbered lines, for tests of long outputs.
	if err := need(1); err != nil {
		return err
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	return w.Flush()
}

func git(args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	return cmd.Run()
}
