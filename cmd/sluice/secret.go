package main

import (
	"fmt"
	"io"

	"github.com/sluicehq/sluice/sinks/webhook"
)

func runSecret(stdout, stderr io.Writer) int {
	s, err := webhook.NewSecret()
	if err != nil {
		fmt.Fprintln(stderr, "sluice: secret:", err)
		return 1
	}
	fmt.Fprintln(stdout, s)
	return 0
}
