package agentrun

import (
	"fmt"
	"strings"

	"github.com/agentbot/agentbot/runner"
)

// composePrompt turns the job's prompt into the text the agent reads.
func composePrompt(job runner.Job) string {
	var b strings.Builder
	p := job.Prompt
	issue := ""
	if job.IssueNumber > 0 {
		issue = fmt.Sprintf(" #%d", job.IssueNumber)
	}
	switch {
	case job.FollowUp:
		fmt.Fprintf(&b, "# Follow-up on branch %s (issue%s)\n\n", job.Branch, issue)
		if p.Title != "" {
			fmt.Fprintf(&b, "The branch was written for: %s\n\n", p.Title)
		}
	case p.Title != "":
		fmt.Fprintf(&b, "# Issue%s: %s\n\n", issue, p.Title)
	}
	if body := strings.TrimSpace(p.Body); body != "" {
		b.WriteString(body)
		b.WriteString("\n\n")
	}
	if in := strings.TrimSpace(p.Instructions); in != "" {
		b.WriteString("## Instructions\n\n")
		b.WriteString(in)
		b.WriteString("\n\n")
	}
	if len(p.ReviewComments) > 0 {
		b.WriteString("## Review comments to address\n\n")
		for _, c := range p.ReviewComments {
			b.WriteString("- ")
			b.WriteString(strings.ReplaceAll(strings.TrimSpace(c), "\n", "\n  "))
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	if d := strings.TrimSpace(p.DiffSummary); d != "" {
		b.WriteString("## Changes already on this branch\n\n")
		b.WriteString(d)
		b.WriteString("\n\n")
	}
	b.WriteString("---\n")
	repo := job.Repo
	if repo == "" {
		repo = "the repository"
	}
	fmt.Fprintf(&b, "You are working in a git checkout of %s on branch %s. ", repo, job.Branch)
	b.WriteString("Make the changes the task asks for in this working tree. ")
	b.WriteString("agentbot commits your changes when you finish and proposes them for review: ")
	b.WriteString("do not push and do not switch branches. ")
	b.WriteString("End with a short summary of what you changed.\n")
	return b.String()
}

// commitMessage names the task and the issue.
func commitMessage(job runner.Job) string {
	subject := strings.TrimSpace(job.Prompt.Title)
	if job.FollowUp {
		first, _, _ := strings.Cut(strings.TrimSpace(job.Prompt.Instructions), "\n")
		subject = "Follow-up: " + strings.TrimSpace(first)
		if first == "" {
			subject = "Follow-up on " + job.Branch
		}
	}
	if subject == "" {
		subject = "Changes for task " + job.TaskID
	}
	if job.IssueNumber > 0 {
		subject = truncateSubject(subject, 72-len(fmt.Sprintf(" (#%d)", job.IssueNumber)))
		subject += fmt.Sprintf(" (#%d)", job.IssueNumber)
	} else {
		subject = truncateSubject(subject, 72)
	}
	body := "Written by agentbot's coding agent (" + job.Agent.Name + ").\n\nAgentbot-Task: " + job.TaskID + "\n"
	if job.IssueNumber > 0 {
		body = fmt.Sprintf("Written by agentbot's coding agent (%s) for issue #%d.\n\nAgentbot-Task: %s\n", job.Agent.Name, job.IssueNumber, job.TaskID)
	}
	return subject + "\n\n" + body
}

func truncateSubject(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimSpace(string(r[:n-1])) + "…"
}
