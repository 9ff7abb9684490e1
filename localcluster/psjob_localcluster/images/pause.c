/* The pod sandbox's pause process: holds the pod's namespaces open and does nothing else.
 *
 * As Kubernetes' own pause: it exits 0 on SIGINT or SIGTERM (the runtime stops a sandbox that
 * way) and, being PID 1 of the pod when the pod shares its process namespace, reaps every zombie
 * it inherits. Built with `gcc -static` into an image FROM scratch (psjob_localcluster.images).
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
  (void)signal_number;
  _exit(0);
}

static void reap(int signal_number) {
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
      sigaction(SIGCHLD, &on_child, NULL) < 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
