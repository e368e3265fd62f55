package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// triggerOf checks a create request and turns it into the task's trigger,
// or says what is wrong with it.
func triggerOf(req CreateRequest, tok Token) (agentbot.Trigger, string) {
	owner, name, _ := strings.Cut(req.Repo, "/")
	switch {
	case !repoPattern.MatchString(req.Repo):
		return agentbot.Trigger{}, `"repo" must be "owner/name"`
	case strings.TrimSpace(req.Prompt) == "":
		return agentbot.Trigger{}, `"prompt" is required`
	case len(req.Prompt) > maxRequestBytes || !utf8.ValidString(req.Prompt):
		return agentbot.Trigger{}, `"prompt" must be UTF-8 text of at most 128 KiB`
	case req.Issue < 0:
		return agentbot.Trigger{}, `"issue" must be an issue number`
	case req.BaseBranch != "" && (!refPattern.MatchString(req.BaseBranch) || strings.Contains(req.BaseBranch, "..")):
		return agentbot.Trigger{}, `"base_branch" is not a branch name`
	}
	if err := checkChoices(req); err != nil {
		return agentbot.Trigger{}, err.Error()
	}
	trig := agentbot.Trigger{
		Kind:   agentbot.KindNew,
		Issue:  agentbot.IssueRef{Repo: agentbot.Repo{Owner: owner, Name: name}, Number: req.Issue},
		Sender: agentbot.Sender{Login: tok.Name},
		API: &agentbot.APIRequest{
			Token: tok.Name, BaseBranch: req.BaseBranch, Template: req.Template, Agent: req.Agent, Model: req.Model,
			NoPR: req.OpenPR != nil && !*req.OpenPR,
		},
		Reason: "task API",
	}
	if req.Issue > 0 {
		// The issue's title and body are read when the task starts; the
		// prompt is the instructions, as after /agent.
		trig.Prompt.Instructions = req.Prompt
	} else {
		title, body, _ := strings.Cut(strings.TrimSpace(req.Prompt), "\n")
		trig.Prompt = agentbot.Prompt{Title: truncate(title, 200), Body: strings.TrimSpace(body)}
	}
	return trig, ""
}

// checkChoices checks template, agent and model with the settings file's
// own rules, so an API request can choose nothing a settings file could not.
func checkChoices(req CreateRequest) error {
	choices := map[string]string{}
	for k, v := range map[string]string{"template": req.Template, "agent": req.Agent, "model": req.Model} {
		if v != "" {
			choices[k] = v
		}
	}
	if len(choices) == 0 {
		return nil
	}
	raw, err := json.Marshal(choices)
	if err != nil {
		return err
	}
	if _, err := github.ParseSettings(raw); err != nil {
		var se *github.SettingsError
		if errors.As(err, &se) {
			return fmt.Errorf("%s", strings.Join(se.Problems, "; "))
		}
		return err
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
