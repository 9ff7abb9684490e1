//go:build tools

// Package tools pins kube-router, the NetworkPolicy implementation of the kubelet node, so that
// `go mod tidy` keeps its dependencies in go.sum. build.py builds the command from this module.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
