// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus), the library Flux and
// kpt use to decide whether a resource is ready, computes for each object it reads.
//
// It reads a stream of YAML documents on stdin and writes one JSON object a line:
// {"name": ..., "status": "Current|InProgress|Failed|...", "message": ...}. The psjob tests
// run it against PSJob status fixtures, so the verdict is kstatus's own, not a re-implementation.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	documents := utilyaml.NewYAMLReader(bufio.NewReader(in))
	encoder := json.NewEncoder(out)
	for {
		document, err := documents.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(document)) == 0 {
			continue
		}
		// Through JSON, so that integers stay int64 as the API server would send them.
		asJSON, err := yaml.YAMLToJSON(document)
		if err != nil {
			return err
		}
		resource := &unstructured.Unstructured{}
		if err := resource.UnmarshalJSON(asJSON); err != nil {
			return err
		}
		result, err := status.Compute(resource)
		if err != nil {
			return fmt.Errorf("%s: %w", resource.GetName(), err)
		}
		line := verdict{Name: resource.GetName(), Status: result.Status.String(), Message: result.Message}
		if err := encoder.Encode(line); err != nil {
			return err
		}
	}
}
