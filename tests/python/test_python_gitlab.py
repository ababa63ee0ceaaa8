"""python-gitlab, unmodified, against a running agentreg.

Usage: AGENTREG_URL=http://127.0.0.1:8080 AGENTREG_TOKEN=<root token> python test_python_gitlab.py
Exits non-zero on the first broken expectation.
"""

import os
import sys

import gitlab
import requests

URL = os.environ["AGENTREG_URL"]
TOKEN = os.environ["AGENTREG_TOKEN"]


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def main():
    gl = gitlab.Gitlab(URL, private_token=TOKEN)
    gl.auth()
    check(gl.user.username == "root", "auth() finds the current user")
    version, _revision = gl.version()
    check(version != "unknown", f"version() answers ({version})")

    project = gl.projects.create({"name": "compat"})
    check(project.path_with_namespace == "root/compat", "projects.create")
    same = gl.projects.get("root/compat")
    check(same.id == project.id, "projects.get by full path")

    user = gl.users.create({"username": "dev", "name": "Dev", "email": "dev@example.com"})
    member = project.members.create({"user_id": user.id, "access_level": 30})
    check(member.access_level == 30, "members.create")
    pat = user.personal_access_tokens.create({"name": "ci", "scopes": ["read_api"]})
    check(pat.token.startswith("glpat-"), "users.personal_access_tokens.create returns the secret")

    names = [f"agent-{index:02d}" for index in range(25)]
    for name in reversed(names):
        project.cluster_agents.create({"name": name})
    listed = [agent.name for agent in project.cluster_agents.list(iterator=True, per_page=10)]
    check(listed == names, "list(iterator=True) walks every page in name order")
    check(len(project.cluster_agents.list(get_all=True)) == 25, "list(get_all=True)")
    page = project.cluster_agents.list(page=2, per_page=10)
    check([a.name for a in page] == names[10:20], "explicit page")
    keyset = project.cluster_agents.list(iterator=True, pagination="keyset", order_by="name",
                                         sort="asc", per_page=10)
    check([agent.name for agent in keyset] == names,
          "list(iterator=True, pagination='keyset') follows the next links in name order")
    newest_first = project.cluster_agents.list(iterator=True, pagination="keyset", per_page=7)
    check([agent.name for agent in newest_first] == names,
          "keyset pages default to the newest id first (registered in reverse name order)")

    agent = project.cluster_agents.get(project.cluster_agents.list(per_page=1, get_all=False)[0].id)
    check(agent.name == "agent-00" and agent.config_project["path_with_namespace"] == "root/compat",
          "cluster_agents.get")

    try:
        project.cluster_agents.create({"name": "Bad_Name"})
        check(False, "invalid name is refused")
    except gitlab.exceptions.GitlabCreateError as error:
        check(error.response_code == 400 and "Name can contain only" in str(error.error_message),
              "invalid name gives GitLab's 400 message")

    tokens_path = f"/projects/{project.id}/cluster_agents/{agent.id}/tokens"
    created = gl.http_post(tokens_path, post_data={"name": "rollout", "description": "first"})
    check(created["token"].startswith("glagent-"), "token create returns the secret once")
    gl.http_post(tokens_path, post_data={"name": "rotation"})
    try:
        gl.http_post(tokens_path, post_data={"name": "third"})
        check(False, "a third active token is refused")
    except gitlab.exceptions.GitlabHttpError as error:
        check(error.response_code == 400
              and "An agent can have only two active tokens at a time" in str(error.error_message),
              "the third active token gets GitLab's 400 message")
    listed_tokens = gl.http_list(tokens_path, get_all=True)
    check(len(listed_tokens) == 2 and all("token" not in t for t in listed_tokens),
          "token list has both tokens and no secrets")
    gl.http_delete(f"{tokens_path}/{created['id']}")
    try:
        gl.http_get(f"{tokens_path}/{created['id']}")
        check(False, "a revoked token is not found")
    except gitlab.exceptions.GitlabHttpError as error:
        check(error.response_code == 404, "GET of a revoked token is 404 (terraform relies on it)")

    config = gl.http_post(f"/projects/{project.id}/cluster_agents/{agent.id}/url_configurations",
                          post_data={"url": "grpc://agent.example.com"})
    check(len(config["public_key"]) == 44, "url_configurations create (JWT mode)")
    check(project.cluster_agents.get(agent.id).is_receptive, "agent is receptive")

    agent.delete()
    try:
        project.cluster_agents.get(agent.id)
        check(False, "deleted agent is gone")
    except gitlab.exceptions.GitlabGetError as error:
        check(error.response_code == 404, "deleted agent is 404")

    reader = gitlab.Gitlab(URL, private_token=pat.token)
    check(len(reader.projects.get(project.id).cluster_agents.list(get_all=True)) == 24,
          "a read_api developer token lists agents")
    try:
        reader.projects.get(project.id, lazy=True).cluster_agents.create({"name": "nope"})
        check(False, "read_api cannot write")
    except gitlab.exceptions.GitlabCreateError as error:
        check(error.response_code == 403, "read_api token gets 403 on create")

    anonymous = requests.get(f"{URL}/api/v4/projects/{project.id}/cluster_agents", timeout=10)
    check(anonymous.status_code == 401 and anonymous.json() == {"message": "401 Unauthorized"},
          "anonymous gets GitLab's 401")
    print("python-gitlab compatibility: all checks passed")


if __name__ == "__main__":
    main()
